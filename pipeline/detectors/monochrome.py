"""Whether a photo looks like a scan of a monochrome print (gray, or every colour on one hue:
sepia, selenium, yellowed paper), which is what `--detector auto` runs `verified` on: on such
prints it finds the damage that `learned`, trained on damage drawn over digital photos, misses.

A scan of a gray or toned print keeps its colours on one line through gray: each pixel's
colour (its offset from gray in the opponent plane) points the same way, and not far. A colour
photo spreads its colours round the hue circle, or, when warm all over (a ginger cat, a retina,
coffee), lies much further from gray than a toned print does.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.tone import GRAY_CHROMA

# Pixels looked at: a strided sample, so a 40 MP scan costs what a 1 MP one does.
SAMPLE_PIXELS = 250_000
# Gray: the 99.5th percentile of (max - min) over the channels at most `tone.GRAY_CHROMA`
# levels of 255, as the fills decide it.
# One hue: the length of the chroma vectors' sum over the sum of their lengths (1 = every
# pixel on the same hue). Bounds chosen between the detection benchmarks' synthetic toned
# prints (`pipeline.damage.add_print_damage`: concentration 1.000, 99th-percentile chroma
# 50-66) and scikit-image's and the training sets' digital colour photos (concentration
# 0.003-0.93, or 0.99-0.998 with chroma 115-179 for the warm ones); no real print set them.
# The four real scanned prints of benchmarks/real measured 0.985-0.999 and 36-81.
MIN_CONCENTRATION = 0.95
MAX_CHROMA = 100.0
# Nearly gray: a gray print stored in colour with scanner noise or JPEG's colour beside edges
# has a little chroma in no one direction (a real gray portrait: 99th percentile 13,
# concentration 0.84); the least colourful colour photo measured had 45 (a gray portrait with
# a colour strip along one side), the benchmarks' and training's at least 64.
NEAR_GRAY_CHROMA = 24.0
# The opponent plane: a colour's offset from gray as (R - (G + B) / 2, (G - B) * sqrt(3) / 2),
# whose angle is its hue and whose length about its chroma.
SQRT3_2 = math.sqrt(3) / 2


def hue_facts(image: np.ndarray) -> tuple[float, float, float]:
    """(99.5th and 99th percentile chroma in 8-bit levels, hue concentration) of an HxWx3
    (or more channels: the first three) uint8/uint16 photo, from a strided sample."""
    step = max(1, math.ceil(math.sqrt(image.shape[0] * image.shape[1] / SAMPLE_PIXELS)))
    pixels = image[::step, ::step, :3].reshape(-1, 3).astype(np.float32)
    if image.dtype == np.uint16:
        pixels /= 257.0
    chroma = pixels.max(axis=1) - pixels.min(axis=1)
    red_green = pixels[:, 0] - (pixels[:, 1] + pixels[:, 2]) / 2
    yellow_blue = SQRT3_2 * (pixels[:, 1] - pixels[:, 2])
    length = float(np.hypot(red_green, yellow_blue).sum())
    concentration = (float(np.hypot(red_green.sum(), yellow_blue.sum())) / length
                     if length else 0.0)
    highest, high = np.percentile(chroma, (99.5, 99))
    return float(highest), float(high), concentration


def looks_like_print(image: np.ndarray) -> bool:
    """Whether a uint8/uint16 photo (HxW, or HxWxC with C >= 3) is gray, nearly gray, or
    toned on one hue within a toned print's chroma."""
    if image.ndim == 2 or image.shape[2] < 3:
        return True
    highest, chroma, concentration = hue_facts(image)
    if highest <= GRAY_CHROMA or chroma <= NEAR_GRAY_CHROMA:
        return True
    return concentration >= MIN_CONCENTRATION and chroma <= MAX_CHROMA
