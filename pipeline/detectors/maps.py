"""What every detector reads and returns: photos as float luminance, score maps turned into
masks by hysteresis, row bands that bound memory on big scans, and the shipped weights files.
"""

from __future__ import annotations

import hashlib
import io
from functools import lru_cache
from importlib import resources
from typing import Any

import cv2
import numpy as np

# 0.5 is each detector's calibrated threshold; higher finds fainter damage and flags more.
DEFAULT_SENSITIVITY = 0.5


def odds_factor(sensitivity: float) -> float:
    """What sensitivity does to the odds a calibrated threshold asks for: each 0.1 above 0.5
    halves them, each 0.1 below doubles them, so the scale is the same on both sides."""
    return 2.0 ** (-(sensitivity - 0.5) * 10)


def float_image(image: np.ndarray) -> np.ndarray:
    """float32 in [0, 1], HxW or HxWx3: depth scaled, alpha (or a 4th sample) dropped."""
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    pixels = image.astype(np.float32) / scale
    if pixels.ndim == 3:
        pixels = pixels[:, :, 0] if pixels.shape[2] in (1, 2) else pixels[:, :, :3]
    return np.ascontiguousarray(pixels)


def luminance(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    return np.ascontiguousarray(pixels @ np.float32([0.299, 0.587, 0.114]))


def gray_float(image: np.ndarray) -> np.ndarray:
    """Luminance in [0, 1] as float32 HxW, whatever the depth and channels."""
    return luminance(float_image(image))


def hysteresis(score: np.ndarray, low: float, high: float) -> np.ndarray:
    """Pixels above `low` connected to one above `high`: faint ends of a sure scratch stay."""
    candidates = (score > low).astype(np.uint8)
    count, labels = cv2.connectedComponents(candidates, connectivity=8)
    sure = np.zeros(count, bool)
    sure[np.unique(labels[score > high])] = True
    sure[0] = False
    return sure[labels]


def in_bands(pixels: np.ndarray, band: int, overlap: int, score) -> np.ndarray:
    """`score` (an HxW map of a part of the photo) over the whole photo, run on row bands of
    `band` rows that each see `overlap` more rows above and below, so that a detector's
    context does not end at a seam; each band keeps its own rows of the map."""
    height = pixels.shape[0]
    out = None
    for top in range(0, height, band):
        y0, y1 = max(0, top - overlap), min(height, top + band + overlap)
        part = score(pixels[y0:y1])
        if out is None:
            out = np.zeros((height, *part.shape[1:]), part.dtype)
        out[top:top + band] = part[top - y0:top - y0 + min(band, height - top)]
    return out


@lru_cache(maxsize=4)
def load_weights(file: str) -> dict[str, Any]:
    """Shipped weights in `pipeline/assets/` (numpy arrays, their calibrated threshold, and
    the file's sha256), read once per process."""
    data = resources.files("pipeline.assets").joinpath(file).read_bytes()
    with np.load(io.BytesIO(data)) as saved:
        weights = {name: saved[name] for name in saved.files}
    weights["sha256"] = hashlib.sha256(data).hexdigest()
    return weights
