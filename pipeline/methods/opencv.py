"""Diffusion fills from OpenCV: Telea's fast marching and Navier-Stokes (`cv2.inpaint`).

The seed's comparison rows. `cv2.inpaint` takes multichannel images only at 8 bits,
so each channel is filled as 32-bit float on its own: 16-bit scans keep their depth.
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
        channels = [
            cv2.inpaint(np.ascontiguousarray(image[:, :, c]), hole, self.params.radius, self.flag)
            for c in range(image.shape[2])
        ]
        return Fill(np.stack(channels, axis=2))


class Telea(_Diffusion):
    name = "telea"
    flag = cv2.INPAINT_TELEA


class NavierStokes(_Diffusion):
    name = "ns"
    flag = cv2.INPAINT_NS
