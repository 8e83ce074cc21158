"""A print's tone, decided from its known pixels: gray, toned (sepia, cyanotype) or colour.

A gray or toned print is filled on its luminance alone and the fill is carried back to
colour through the print's own luminance-to-colour curve, so no fill paints a colour the
print does not have. `Canvas` (methods/base.py) applies it to every method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

ToneKind = Literal["gray", "toned", "colour"]

# Known pixels looked at: a strided sample, so a 40 MP scan costs what a 1 MP one does.
SAMPLE_PIXELS = 1_000_000
# Gray: the 99.5th percentile of (max - min) over the channels, in levels of 255. Gray
# stored as RGB has 0, also after JPEG (equal channels keep Cb = Cr = 128).
GRAY_CHROMA = 2.0
# Toned: the 99th percentile of the channels' distance from the tone curve, in levels of
# 255. Measured on scikit-image's photos: synthetic sepia from its eight gray photos 0.6-1.2
# as PNG, 2.7-11.6 as JPEG (quality 75-90, 4:2:0: chroma subsampling puts colour beside
# sharp edges); its colour photos 20 (retina) to 168 (colorwheel). 14 lies between.
TONED_RESIDUAL = 14.0
# The tone curve: median colour offset per luminance bin; thinner bins are interpolated.
BINS = 64
MIN_BIN_PIXELS = 20


@dataclass(frozen=True)
class Tone:
    """How a photo's colour relates to its luminance (offsets: BINS x 3, in [0, 1] units)."""

    kind: ToneKind
    offsets: np.ndarray | None = None
    centres: np.ndarray | None = None

    @property
    def by_luminance(self) -> bool:
        """Whether fills are made on luminance and carried back to colour."""
        return self.kind != "colour"

    def luminance(self, pixels: np.ndarray) -> np.ndarray:
        """float HxWx3 -> HxWx1: the channel mean, which the tone curve is measured on."""
        return pixels.mean(axis=2, keepdims=True, dtype=np.float32)

    def colour(self, luminance: np.ndarray) -> np.ndarray:
        """float HxWx1 -> HxWx3 on the print's tone curve (equal channels when gray)."""
        if self.kind == "gray":
            return np.repeat(luminance, 3, axis=2)
        level = luminance[:, :, 0]
        channels = [level + np.interp(level, self.centres, self.offsets[:, c])
                    for c in range(3)]
        return np.clip(np.stack(channels, axis=2), 0, 1).astype(np.float32)


COLOUR = Tone("colour")


def decide(image: np.ndarray, hole: np.ndarray) -> Tone:
    """The tone of an HxWx3 uint8/uint16 photo, from its pixels outside `hole`."""
    if image.ndim != 3 or image.shape[2] != 3:
        return Tone("gray")  # one channel already: nothing to carry
    step = max(1, math.ceil(math.sqrt(image.shape[0] * image.shape[1] / SAMPLE_PIXELS)))
    known = image[::step, ::step][~hole[::step, ::step]]
    if len(known) < MIN_BIN_PIXELS:
        return COLOUR
    levels = known.astype(np.float32) / (257.0 if image.dtype == np.uint16 else 1.0)
    if np.percentile(levels.max(axis=1) - levels.min(axis=1), 99.5) <= GRAY_CHROMA:
        return Tone("gray")
    tone = tone_curve(levels / 255.0)
    if tone is None:
        return COLOUR
    residual = np.abs(levels / 255.0 - tone.colour(tone.luminance(levels[:, None] / 255.0))[:, 0])
    if np.percentile(residual.max(axis=1) * 255.0, 99) <= TONED_RESIDUAL:
        return tone
    return COLOUR


def tone_curve(pixels: np.ndarray) -> Tone | None:
    """The median offset of each channel from the luminance, per luminance bin (N x 3 in)."""
    luminance = pixels.mean(axis=1)
    bins = np.minimum((luminance * BINS).astype(np.int64), BINS - 1)
    order = np.argsort(bins, kind="stable")
    starts = np.searchsorted(bins[order], np.arange(BINS + 1))
    offsets, centres = [], []
    for index in range(BINS):
        members = order[starts[index]:starts[index + 1]]
        if len(members) >= MIN_BIN_PIXELS:
            offsets.append(np.median(pixels[members] - luminance[members, None], axis=0))
            centres.append(float(np.median(luminance[members])))
    if not offsets:
        return None
    # Black is neutral whatever the toning (no channel goes below 0 while their mean is 0),
    # so below the darkest known pixels the curve fades to zero offset instead of keeping a
    # cast. Above the lightest it keeps their offset: that is the paper's tone (a warm
    # print's white is cream), and channels clip at 1.
    if centres[0] > 0:
        centres.insert(0, 0.0)
        offsets.insert(0, np.zeros(3))
    return Tone("toned", np.asarray(offsets, np.float32), np.asarray(centres, np.float32))
