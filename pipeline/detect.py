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
TILE_OVERLAP = 96


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
        mask = _learned_mask(float_image(image), sensitivity)
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


# --- learned ---------------------------------------------------------------------------
# Per-pixel features that separate defects from picture detail: how much a pixel stands
# out from its neighbourhood at the scales of dust and scratches (top-hats, Hessian), how
# busy the neighbourhood is (texture, density of other responses: grass and hair are
# busy, a speck on a cheek is not), and how close it is to the near-white or near-black
# tone of dust and scratches. A small MLP (weights in pipeline/assets) scores them.

HAT_SIZES = (3, 5, 9)
HESSIAN_SIGMAS = (1.0, 2.0)


def features(pixels: np.ndarray) -> np.ndarray:
    """float32 HxWxF feature stack of a float image in [0, 1] (HxW or HxWxC, C 1 or 3);
    all features are of its luminance."""
    gray = luminance(pixels)
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
    # Colour is left out on purpose: neutral defects on colour prints would be a strong
    # cue, but trained on tinted grey photos it flagged 12-16% of real colour photos.
    return np.stack(stack, axis=2).astype(np.float32)


def context_features(probability: np.ndarray) -> np.ndarray:
    """Auto-context: what the first stage thinks of the neighbourhood. A defect is a thin
    connected run of likely pixels; picture detail is a clutter of them."""
    sure = (probability > 0.5).astype(np.float32)
    return np.stack([
        probability,
        cv2.GaussianBlur(probability, (0, 0), 1.5),
        cv2.GaussianBlur(probability, (0, 0), 5),
        cv2.dilate(probability, np.ones((7, 7), np.uint8)),
        cv2.GaussianBlur(sure, (0, 0), 4),
        cv2.GaussianBlur(sure, (0, 0), 12),
    ], axis=2)


FEATURE_COUNT = 4 * len(HAT_SIZES) + 5 + 2 * len(HESSIAN_SIGMAS) + 6
CONTEXT_COUNT = 6


@lru_cache(maxsize=1)
def load_model() -> dict[str, Any]:
    """The shipped MLP weights (numpy arrays), loaded once per process."""
    data = resources.files("pipeline.assets").joinpath(WEIGHTS_FILE).read_bytes()
    with np.load(io.BytesIO(data)) as saved:
        model = {name: saved[name] for name in saved.files}
    model["sha256"] = hashlib.sha256(data).hexdigest()
    return model


def mlp_probability(feature_stack: np.ndarray, model: dict[str, Any], stage: int) -> np.ndarray:
    """Run one stage's MLP over every pixel: normalize, dense layers with ReLU, sigmoid."""
    height, width, count = feature_stack.shape
    prefix = f"s{stage}_"
    hidden = (feature_stack.reshape(-1, count) - model[prefix + "mean"]) / model[prefix + "scale"]
    layer = 0
    while f"{prefix}w{layer}" in model:
        hidden = hidden @ model[f"{prefix}w{layer}"] + model[f"{prefix}b{layer}"]
        layer += 1
        if f"{prefix}w{layer}" in model:
            np.maximum(hidden, 0, out=hidden)
    return (1 / (1 + np.exp(-hidden))).reshape(height, width).astype(np.float32)


def two_stage_probability(pixels: np.ndarray, model: dict[str, Any]) -> np.ndarray:
    stack = features(pixels)
    first = mlp_probability(stack, model, 0)
    return mlp_probability(np.concatenate([stack, context_features(first)], 2), model, 1)


def damage_probability(pixels: np.ndarray) -> np.ndarray:
    """Per-pixel probability of damage (float32 HxW), in row bands to bound memory."""
    model = load_model()
    height, width = pixels.shape[:2]
    out = np.zeros((height, width), np.float32)
    band = max(1, TILE * TILE // max(width, 1))
    for top in range(0, height, band):
        # Features and context look up to ~80 px away: compute them with that margin.
        y0, y1 = max(0, top - TILE_OVERLAP), min(height, top + band + TILE_OVERLAP)
        probability = two_stage_probability(pixels[y0:y1], model)
        out[top:top + band] = probability[top - y0:top - y0 + min(band, height - top)]
    return out


def shifted(threshold: float, sensitivity: float) -> float:
    """Move a calibrated threshold by sensitivity: each 0.1 above 0.5 halves the odds it
    asks for, each 0.1 below doubles them, so the scale is the same on both sides."""
    odds = threshold / (1 - threshold) * 2.0 ** (-(sensitivity - 0.5) * 10)
    return odds / (1 + odds)


def _learned_mask(pixels: np.ndarray, sensitivity: float) -> np.ndarray:
    model = load_model()
    probability = damage_probability(pixels)
    high = shifted(float(model["pixel_threshold"]), sensitivity)
    candidates = hysteresis(probability, high / 2, high)
    labels, table = component_table(candidates, probability, pixels)
    if not len(table):
        return candidates
    scores = mlp_probability(table[None], model, 2)[0]
    keep = np.concatenate([[False], scores > shifted(float(model["threshold"]), sensitivity)])
    return keep[labels]


def component_table(mask: np.ndarray, probability: np.ndarray,
                    pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shape and context of each candidate defect (one row per connected component).

    A defect is a speck or a thin line of even width; picture detail that fooled the
    pixel stage is often a blob, a band along an object's edge, or one of many
    candidates in a busy neighbourhood.
    """
    from scipy import ndimage
    from skimage.morphology import skeletonize

    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return labels, np.zeros((0, COMPONENT_FEATURES), np.float32)
    gray = luminance(pixels)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    contrast = np.maximum(cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, kernel),
                          cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel))
    texture = cv2.GaussianBlur(np.abs(gray - cv2.GaussianBlur(gray, (0, 0), 1.0)), (0, 0), 12)
    smooth = cv2.GaussianBlur(gray, (0, 0), 3)
    edges = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
    crowd = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 10)
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1,
                                                                                       1:-1]
    flat = labels.ravel()
    area = np.bincount(flat, minlength=count)[1:].astype(np.float32)
    length = np.maximum(np.bincount(flat, skeletonize(mask).ravel().astype(np.float32),
                                    minlength=count)[1:], 1)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(flat, values.ravel().astype(np.float64), minlength=count)[1:] / area

    index = np.arange(1, count)
    boxes = ndimage.find_objects(labels)
    span = np.array([np.hypot(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in boxes])
    table = np.stack([
        np.log(area), np.log(length), area / length, span / length, np.log(span),
        ndimage.maximum(distance, labels, index),
        mean(probability), ndimage.maximum(probability, labels, index),
        mean(contrast), ndimage.maximum(contrast, labels, index),
        mean(gray), mean(np.abs(gray - 0.5)), mean(texture), mean(edges), mean(crowd),
    ], axis=1)
    return labels, table.astype(np.float32)


COMPONENT_FEATURES = 15


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
    """Count connected defects by shape: dust (small), scratch (long or straight), hair."""
    counts = {"dust": 0, "scratch": 0, "hair": 0}
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    for index in range(1, count):
        x, y, w, h = stats[index, :4]
        counts[defect_kind(labels[y:y + h, x:x + w] == index, max(mask.shape))] += 1
    return counts


def defect_kind(component: np.ndarray, long_side: int) -> str:
    """Dust fits in 8 px. Scratches run long (a fifth of the photo or more) or nearly
    straight (the box's diagonal close to the skeleton's length); hairs are short and curl."""
    from skimage.morphology import skeletonize

    if max(component.shape) <= 8:
        return "dust"
    length = max(1, int(skeletonize(component).sum()))
    span = float(np.hypot(*component.shape))
    return "scratch" if length >= 0.2 * long_side or span >= 0.95 * length else "hair"
