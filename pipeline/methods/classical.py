"""The strongest classical fills, as comparison rows and as the optimizer's starting point.

`exemplar` (OpenCV contrib shift-map), `fsr` (frequency-selective reconstruction, OpenCV
contrib) and `biharmonic` (scikit-image). OpenCV's xphoto inpainting reads its mask the
other way round from ours: non-zero = known. It also works on 8-bit pixels, so those two
fill 16-bit scans at 8-bit precision (known pixels keep their depth: `Method.__call__`).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from pipeline.methods.base import Fill, Method, MethodParams


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float HxWxC in [0, 1] -> uint8 HxW (gray) or HxWx3, the layout OpenCV expects."""
    pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    return pixels[:, :, 0] if pixels.shape[2] == 1 else np.ascontiguousarray(pixels)


def xphoto_fill(image: np.ndarray, mask: np.ndarray, algorithm: int) -> np.ndarray:
    """Run `cv2.xphoto.inpaint` on a float HxWxC image; returns float HxWxC."""
    source = to_uint8(image)
    known = (~mask).astype(np.uint8) * 255
    out = np.zeros_like(source)
    cv2.xphoto.inpaint(source, known, out, algorithm)
    out = out.astype(np.float32) / 255.0
    return out[:, :, None] if out.ndim == 2 else out


def fsr_fill(image: np.ndarray, mask: np.ndarray, quality: str = "fast") -> np.ndarray:
    flag = cv2.xphoto.INPAINT_FSR_BEST if quality == "best" else cv2.xphoto.INPAINT_FSR_FAST
    return xphoto_fill(image, mask, flag)


def biharmonic_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic

    # Far from the border the biharmonic solution can overshoot the valid range.
    filled = inpaint_biharmonic(image, mask, channel_axis=-1)
    return np.clip(filled, 0, 1).astype(np.float32)


class Exemplar(Method):
    """Shift-map exemplar inpainting: holes rebuilt from shifted copies of the photo."""

    name = "exemplar"

    def fill(self, image: np.ndarray, mask: np.ndarray) -> Fill:
        return Fill(xphoto_fill(image, mask, cv2.xphoto.INPAINT_SHIFTMAP))


class FSRParams(MethodParams):
    quality: Literal["fast", "best"] = Field(
        default="fast", description="INPAINT_FSR_FAST or the much slower INPAINT_FSR_BEST."
    )


class FSR(Method):
    """Frequency-selective reconstruction: the strongest classical fill on wide holes."""

    name = "fsr"
    Params = FSRParams

    def fill(self, image: np.ndarray, mask: np.ndarray) -> Fill:
        return Fill(fsr_fill(image, mask, self.params.quality))


class Biharmonic(Method):
    """scikit-image's biharmonic inpainting: very strong on thin scratches."""

    name = "biharmonic"

    def fill(self, image: np.ndarray, mask: np.ndarray) -> Fill:
        return Fill(biharmonic_fill(image, mask))
