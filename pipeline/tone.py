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
# The tone curve: median colour offset in each of up to BINS luminance quantiles, each of
# at least MIN_BIN_PIXELS pixels; interpolated between their medians.
BINS = 64
MIN_BIN_PIXELS = 20


@dataclass(frozen=True)
class Tone:
    """How a photo's colour relates to its luminance: each channel's offset from it at the
    curve's points (`centres`, `offsets`: N and N x 3, in [0, 1] units)."""

    kind: ToneKind
    offsets: np.ndarray | None = None
    centres: np.ndarray | None = None
    # The known pixels' luminance range: a toned print has no colour for a luminance it
    # never reaches (a sepia black is brown, not 0), so fills are held inside it.
    lowest: float = 0.0
    highest: float = 1.0

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
        level = np.clip(luminance[:, :, 0], self.lowest, self.highest)
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
    pixels = known.astype(np.float32) / (65535.0 if image.dtype == np.uint16 else 255.0)
    chroma = (pixels.max(axis=1) - pixels.min(axis=1)) * 255.0
    if np.percentile(chroma, 99.5) <= GRAY_CHROMA:
        return Tone("gray")
    tone = tone_curve(pixels)
    if tone is None:
        return COLOUR
    residual = np.abs(pixels - tone.colour(tone.luminance(pixels[:, None]))[:, 0])
    if np.percentile(residual.max(axis=1) * 255.0, 99) <= TONED_RESIDUAL:
        return tone
    return COLOUR


def tone_curve(pixels: np.ndarray) -> Tone | None:
    """The median offset of each channel from the luminance, per luminance bin (N x 3 in).

    Bins hold equal shares of the pixels (luminance quantiles), so the darkest and lightest
    pixels get a bin of their own however few they are, and no bin is too thin to trust.
    """
    luminance = pixels.mean(axis=1)
    count = min(BINS, len(luminance) // MIN_BIN_PIXELS)
    if count < 1:
        return None
    order = np.argsort(luminance, kind="stable")
    centres, offsets = [], []
    for members in np.array_split(order, count):
        centre = float(np.median(luminance[members]))
        if centres and centre <= centres[-1]:
            continue  # a flat stretch of luminance: one point of the curve is enough
        centres.append(centre)
        offsets.append(np.median(pixels[members] - luminance[members, None], axis=0))
    if centres[0] > 0:
        # Toning tints in proportion (a channel is the luminance times its tint), so below
        # the darkest bin's median the offsets shrink toward black instead of staying put.
        centres.insert(0, 0.0)
        offsets.insert(0, np.zeros(3))
    return Tone("toned", np.asarray(offsets, np.float32), np.asarray(centres, np.float32),
                float(luminance[order[0]]), float(luminance[order[-1]]))
