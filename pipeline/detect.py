"""Find dust, scratches and hairs on scanned prints: a damage mask without drawing it by hand.

Detectors, by name: `learned` (a small MLP over per-pixel shape and context features,
trained on synthetic damage over clean photos, weights in `pipeline/assets/`), `infrared`
(the scanner's IR channel: dust blocks infrared, dyes do not) and `tophat` (the naive
morphological baseline, kept to measure against). `auto` picks `infrared` when the photo
has an IR channel, else `learned`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import cv2
import numpy as np

DETECTORS = ("learned", "infrared", "tophat")
DEFAULT_DETECTOR = "auto"
DEFAULT_SENSITIVITY = 0.5
WEIGHTS_FILE = "damage_mlp.npz"
# Bands bound the detector's memory on large scans (about TILE*TILE pixels at a time); the
# overlap exceeds the features' reach, so banded and whole-frame masks agree.
TILE = 1024
TILE_OVERLAP = 48


class DetectorError(ValueError):
    """The detector cannot run on this photo (e.g. `infrared` without an IR channel)."""


@dataclass
class Detection:
    """A damage mask (bool HxW, True = damage) and its defects counted by kind."""

    mask: np.ndarray
    detector: str
    defects: dict[str, int] = field(default_factory=dict)

    @property
    def damage_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def detector_names() -> list[str]:
    return ["auto", *DETECTORS]


def detect(image: np.ndarray, method: str = DEFAULT_DETECTOR,
           sensitivity: float = DEFAULT_SENSITIVITY,
           infrared: np.ndarray | None = None) -> Detection:
    """Find damage in an HxW or HxWxC uint8/uint16 photo (channel 4, if any, is ignored).

    `sensitivity` in [0, 1]: higher finds fainter damage and flags more; 0.5 is the
    calibrated default. `infrared` is the scanner's IR channel (HxW), when there is one.
    """
    if not 0 <= sensitivity <= 1:
        raise ValueError(f"sensitivity must be within [0, 1], got {sensitivity}")
    if method == "auto":
        method = "infrared" if infrared is not None else "learned"
    if method == "learned":
        mask = _learned_mask(gray_float(image), sensitivity)
    elif method == "infrared":
        if infrared is None:
            raise DetectorError("--method infrared needs an IR channel (an RGBI TIFF)")
        if infrared.shape[:2] != image.shape[:2]:
            raise DetectorError(f"IR channel is {infrared.shape[:2]}, photo {image.shape[:2]}")
        mask = infrared_mask(infrared, sensitivity)
    elif method == "tophat":
        mask = tophat_mask(gray_float(image), sensitivity)
    else:
        raise DetectorError(f"unknown detector {method!r}; choose from "
                            f"{', '.join(detector_names())}")
    return Detection(mask, method, count_defects(mask))


def gray_float(image: np.ndarray) -> np.ndarray:
    """Luminance in [0, 1] as float32 HxW, whatever the depth and channels."""
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    pixels = image.astype(np.float32) / scale
    if pixels.ndim == 3:
        colour = pixels[:, :, :3]
        pixels = colour[:, :, 0] if colour.shape[2] == 1 else colour @ np.float32(
            [0.299, 0.587, 0.114][: colour.shape[2]])
    return np.ascontiguousarray(pixels)


# --- learned ---------------------------------------------------------------------------
# Per-pixel features that separate defects from picture detail: how much a pixel stands
# out from its neighbourhood at the scales of dust and scratches (top-hats, Hessian), how
# busy the neighbourhood is (texture, density of other responses: grass and hair are
# busy, a speck on a cheek is not), and how close it is to the near-white or near-black
# tone of dust and scratches. A small MLP (weights in pipeline/assets) scores them.

HAT_SIZES = (3, 5, 9)
HESSIAN_SIGMAS = (1.0, 2.0)


def features(gray: np.ndarray) -> np.ndarray:
    """float32 HxWxF feature stack of a luminance image in [0, 1]."""
    detail = np.abs(gray - cv2.GaussianBlur(gray, (0, 0), 1.0))
    texture_near = cv2.GaussianBlur(detail, (0, 0), 4)
    texture_far = cv2.GaussianBlur(detail, (0, 0), 12)
    # A median ignores the defect itself: a speck on a cheek does not make the cheek busy.
    detail8 = np.clip(detail * 1020, 0, 255).astype(np.uint8)
    robust = [cv2.medianBlur(detail8, size).astype(np.float32) / 1020 for size in (9, 21)]
    hats = []
    for size in HAT_SIZES:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        hats += [cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, kernel),
                 cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel)]
    stack = [*hats, texture_near, texture_far, *robust]
    stack += [hat / (robust[0] + 0.004) for hat in hats]
    mean = cv2.GaussianBlur(gray, (0, 0), 3)
    deviation = np.sqrt(np.maximum(cv2.GaussianBlur(gray * gray, (0, 0), 3) - mean * mean, 0))
    stack.append(deviation)
    for sigma in HESSIAN_SIGMAS:
        smooth = cv2.GaussianBlur(gray, (0, 0), sigma)
        dxx = cv2.Sobel(smooth, cv2.CV_32F, 2, 0, ksize=3)
        dyy = cv2.Sobel(smooth, cv2.CV_32F, 0, 2, ksize=3)
        dxy = cv2.Sobel(smooth, cv2.CV_32F, 1, 1, ksize=3)
        half_trace = (dxx + dyy) / 2
        root = np.sqrt(((dxx - dyy) / 2) ** 2 + dxy**2)
        stack += [(half_trace + root) * sigma**2, (half_trace - root) * sigma**2]
    # Highlights and shadows run along object edges; scratches cross them at random.
    for sigma in (2.0, 4.0):
        smooth = cv2.GaussianBlur(gray, (0, 0), sigma)
        gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
        stack.append(np.sqrt(gx * gx + gy * gy) * sigma)
    strongest = np.maximum(hats[-2], hats[-1])
    stack += [cv2.GaussianBlur(strongest, (0, 0), 3), cv2.GaussianBlur(strongest, (0, 0), 10)]
    stack += [gray, cv2.GaussianBlur(gray, (0, 0), 8)]
    return np.stack(stack, axis=2).astype(np.float32)


FEATURE_COUNT = 4 * len(HAT_SIZES) + 5 + 2 * len(HESSIAN_SIGMAS) + 6


@lru_cache(maxsize=1)
def load_model() -> dict[str, Any]:
    """The shipped MLP weights (numpy arrays), loaded once per process."""
    data = resources.files("pipeline.assets").joinpath(WEIGHTS_FILE).read_bytes()
    with np.load(io.BytesIO(data)) as saved:
        model = {name: saved[name] for name in saved.files}
    model["sha256"] = hashlib.sha256(data).hexdigest()
    return model


def mlp_logits(feature_stack: np.ndarray, model: dict[str, Any]) -> np.ndarray:
    """Run the MLP over every pixel: normalize, then dense layers with ReLU."""
    height, width, count = feature_stack.shape
    hidden = (feature_stack.reshape(-1, count) - model["mean"]) / model["scale"]
    layer = 0
    while f"w{layer}" in model:
        hidden = hidden @ model[f"w{layer}"] + model[f"b{layer}"]
        layer += 1
        if f"w{layer}" in model:
            np.maximum(hidden, 0, out=hidden)
    return hidden.reshape(height, width)


def damage_probability(gray: np.ndarray) -> np.ndarray:
    """Per-pixel probability of damage (float32 HxW), in row bands to bound memory."""
    model = load_model()
    height = gray.shape[0]
    out = np.zeros(gray.shape, np.float32)
    band = max(1, TILE * TILE // max(gray.shape[1], 1))
    for top in range(0, height, band):
        # Features look up to ~30 px away: compute them with that much margin.
        y0, y1 = max(0, top - TILE_OVERLAP), min(height, top + band + TILE_OVERLAP)
        logits = mlp_logits(features(gray[y0:y1]), model)
        out[top:top + band] = logits[top - y0:top - y0 + min(band, height - top)]
    return 1 / (1 + np.exp(-out))


def _learned_mask(gray: np.ndarray, sensitivity: float) -> np.ndarray:
    probability = damage_probability(gray)
    # Sensitivity 0.5 is the calibrated threshold; each 0.1 step moves it by a factor of
    # two in odds, so the scale is the same on both sides.
    base = float(load_model()["threshold"])
    odds = base / (1 - base) * 2.0 ** (-(sensitivity - 0.5) * 10)
    high = odds / (1 + odds)
    low = high / 2
    return hysteresis(probability, low, high)


def hysteresis(score: np.ndarray, low: float, high: float) -> np.ndarray:
    """Pixels above `low` connected to one above `high`: faint ends of a sure scratch stay."""
    candidates = (score > low).astype(np.uint8)
    count, labels = cv2.connectedComponents(candidates, connectivity=8)
    sure = np.zeros(count, bool)
    sure[np.unique(labels[score > high])] = True
    sure[0] = False
    return sure[labels]


# --- infrared --------------------------------------------------------------------------


def infrared_mask(infrared: np.ndarray, sensitivity: float = DEFAULT_SENSITIVITY) -> np.ndarray:
    """Damage from the IR channel: pixels that block clearly more IR than their neighbourhood."""
    ir = gray_float(infrared)
    background = cv2.medianBlur(np.clip(ir * 255, 0, 255).astype(np.uint8), 15) / 255.0
    deficit = background - ir
    spread = 1.4826 * np.median(np.abs(deficit - np.median(deficit)))
    # A fixed floor keeps a clean, flat IR frame (tiny spread) from flagging sensor noise.
    floor = 0.09 - 0.08 * sensitivity
    threshold = max(floor, (8 - 6 * sensitivity) * spread)
    mask = hysteresis(deficit, threshold / 2, threshold)
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def read_infrared(data: bytes) -> np.ndarray | None:
    """The IR channel of an RGBI TIFF (4th sample declared 'unspecified'), else None."""
    if data[:4] not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return None
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tiff:
        page = tiff.pages[0]
        extra = page.extrasamples or ()
        if page.samplesperpixel != 4 or len(extra) != 1 or extra[0] != 0:
            return None
        pixels = page.asarray()
    return np.ascontiguousarray(pixels[..., 3] if pixels.shape[-1] == 4 else pixels[3])


# --- naive baseline --------------------------------------------------------------------


def tophat_mask(gray: np.ndarray, sensitivity: float = DEFAULT_SENSITIVITY) -> np.ndarray:
    """White and black top-hats with a robust threshold: the naive baseline the issue names."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    response = np.maximum(cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, kernel),
                          cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel))
    median = np.median(response)
    spread = 1.4826 * np.median(np.abs(response - median))
    return response > median + (6 - 4 * sensitivity) * max(spread, 1e-3)


# --- defects by kind -------------------------------------------------------------------


def count_defects(mask: np.ndarray) -> dict[str, int]:
    """Count connected defects by shape: dust (small), scratch (long, straight), hair."""
    counts = {"dust": 0, "scratch": 0, "hair": 0}
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    for index in range(1, count):
        x, y, w, h = stats[index, :4]
        counts[defect_kind(labels[y:y + h, x:x + w] == index)] += 1
    return counts


def defect_kind(component: np.ndarray) -> str:
    """Dust fits in 8 px; a scratch runs nearly straight (its span close to its length),
    a hair curls (spans much less than its length)."""
    from skimage.morphology import skeletonize

    if max(component.shape) <= 8:
        return "dust"
    length = max(1, int(skeletonize(component).sum()))
    span = float(np.hypot(*component.shape))
    return "scratch" if span >= 0.7 * length else "hair"
