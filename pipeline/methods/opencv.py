"""Diffusion fills from OpenCV: Telea's fast marching and Navier-Stokes (`cv2.inpaint`).

The seed's comparison rows. `cv2.inpaint` takes multichannel images only at 8 bits,
so each channel is filled on its own at 16 bits (Telea) or as 32-bit float (Navier-Stokes):
16-bit scans keep their depth. OpenCV 5's Telea returns noise on float32 input.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from pipeline.methods.base import Fill, Method, MethodParams


class DiffusionParams(MethodParams):
    radius: float = Field(default=5.0, gt=0, description="Neighbourhood radius in pixels.")


class _Diffusion(Method):
    Params = DiffusionParams
    flag: int

    def fill(self, image: np.ndarray, mask: np.ndarray) -> Fill:
        hole = mask.astype(np.uint8) * 255
        channels = [self._fill_plane(image[:, :, c], hole) for c in range(image.shape[2])]
        return Fill(np.stack(channels, axis=2))

    def _fill_plane(self, plane: np.ndarray, hole: np.ndarray) -> np.ndarray:
        if self.flag == cv2.INPAINT_TELEA:
            deep = np.rint(plane * 65535).astype(np.uint16)
            return cv2.inpaint(deep, hole, self.params.radius, self.flag) / np.float32(65535)
        return cv2.inpaint(np.ascontiguousarray(plane), hole, self.params.radius, self.flag)


class Telea(_Diffusion):
    name = "telea"
    flag = cv2.INPAINT_TELEA


class NavierStokes(_Diffusion):
    name = "ns"
    flag = cv2.INPAINT_NS
