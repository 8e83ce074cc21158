"""Find dust, scratches and hairs on scanned prints: a damage mask without drawing it by hand.

Detectors, by name: `verified` (local-contrast candidates kept by a small learned verifier,
`pipeline.detectors.verified`), `learned` (a small U-Net trained on synthetic damage over clean
photos, weights in `pipeline/assets/`), `infrared`
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

DETECTORS = ("verified", "learned", "infrared", "tophat")
DEFAULT_DETECTOR = "auto"
# What `auto` runs on a photo without an IR channel.
AUTO_DETECTOR = "learned"
DEFAULT_SENSITIVITY = 0.5
# The learned detector knows damage at the size a 300-600 dpi scan of a print shows it (specks
# 1-4 px, scratches 1-3 px wide). Scans at higher dpi show it larger: detect at 0.5 for twice
# the dpi, 0.25 for four times (`--detect-scale`).
DEFAULT_SCALE = 1.0


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
           infrared: np.ndarray | None = None, device: str = "cpu",
           scale: float = DEFAULT_SCALE) -> Detection:
    """Find damage in an HxW or HxWxC uint8/uint16 photo (channel 4, if any, is ignored).

    `sensitivity` in [0, 1]: higher finds fainter damage and flags more; 0.5 is the
    calibrated default. `infrared` is the scanner's IR channel (HxW), when there is one.
    `device` runs the learned detector's net ("cpu", "cuda", "cuda:1", ...). `scale` in
    (0, 1] detects on the photo shrunk by that factor, for scans whose damage is larger than
    the detector knows (see DEFAULT_SCALE); the mask comes back at the photo's size.
    """
    if not 0 <= sensitivity <= 1:
        raise ValueError(f"sensitivity must be within [0, 1], got {sensitivity}")
    if not 0 < scale <= 1:
        raise ValueError(f"detection scale must be within (0, 1], got {scale}")
    if scale < 1:
        return detect_shrunk(image, method, sensitivity, infrared, device, scale)
    if method == "auto":
        method = "infrared" if infrared is not None else AUTO_DETECTOR
    if method == "verified":
        mask = verified_mask(image, sensitivity)
    elif method == "learned":
        mask = learned_mask(float_image(image), sensitivity, device)
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


def detect_shrunk(image: np.ndarray, method: str, sensitivity: float,
                  infrared: np.ndarray | None, device: str, scale: float) -> Detection:
    """Detect on the photo (and IR channel) shrunk by `scale`, then grow the mask back:
    defects are counted at the scale they were found at."""
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    small_infrared = (None if infrared is None else
                      cv2.resize(infrared, size, interpolation=cv2.INTER_AREA))
    found = detect(small, method, sensitivity, small_infrared, device)
    # Any overlap with a flagged small pixel counts: the fill needs the defect's whole
    # footprint, and the shrink blurred its edge into the neighbours.
    grown = cv2.resize(found.mask.astype(np.float32), (width, height),
                       interpolation=cv2.INTER_LINEAR) > 0.25
    return Detection(grown, found.detector, found.defects)


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
# A small U-Net reads the photo (RGB, grey repeated) and scores each pixel. Its coarsest level
# sees the photo at 1/8 scale, so each score weighs about 150 px of context: a speck on a
# cheek stands alone, a star or a highlight sits among others like it, a tower's edge runs on
# along a straight object boundary, a scratch crosses objects without regard for them.
# Trained on synthetic damage over clean photos by benchmarks/train_detector.py (weights in
# pipeline/assets/).

WEIGHTS_FILE = "damage_unet.npz"
# Bands bound the detector's memory on large scans (about TILE*TILE pixels at a time). The
# overlap exceeds the net's reach and bands start on its 8-px pooling grid, so banded and
# whole-frame masks agree.
TILE = 1024
TILE_OVERLAP = 96
GRID = 8
# The views the net scores a photo in, as (quarter turns, mirrored); their scores are averaged.
VIEWS = tuple((turns, flip) for turns in range(4) for flip in (False, True))


def build_net(widths: tuple[int, ...]):
    """The detector's architecture: a U-Net with one level per width (two 3x3 conv + batch
    norm + ReLU each), max-pooling down, nearest upsampling and skip connections up."""
    import torch
    from torch import nn

    def level(inputs: int, width: int):
        return nn.Sequential(
            nn.Conv2d(inputs, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.ModuleList(level(3 if i == 0 else widths[i - 1], w)
                                      for i, w in enumerate(widths))
            self.up = nn.ModuleList(level(widths[i] + widths[i + 1], widths[i])
                                    for i in range(len(widths) - 1))
            self.head = nn.Conv2d(widths[0], 1, 1)

        def forward(self, x):
            skips = []
            for index, block in enumerate(self.down):
                x = block(nn.functional.max_pool2d(x, 2) if index else x)
                skips.append(x)
            for index in reversed(range(len(self.up))):
                x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
                x = self.up[index](torch.cat([skips[index], x], 1))
            return self.head(x)

    return UNet()


@lru_cache(maxsize=4)
def load_weights(file: str = WEIGHTS_FILE) -> dict[str, Any]:
    """Shipped weights in `pipeline/assets/` (numpy arrays, their calibrated threshold, and
    the file's sha256), read once per process: the net's by default."""
    data = resources.files("pipeline.assets").joinpath(file).read_bytes()
    with np.load(io.BytesIO(data)) as saved:
        weights = {name: saved[name] for name in saved.files}
    weights["sha256"] = hashlib.sha256(data).hexdigest()
    return weights


def weights_id(detector: str = "learned") -> str:
    """The identity of the shipped weights `detector` runs (start of their file's sha256),
    recorded in params; `auto` runs AUTO_DETECTOR's when the photo has no IR channel."""
    if (AUTO_DETECTOR if detector == "auto" else detector) == "verified":
        from pipeline.detectors.verified import verifier_id

        return verifier_id()
    return str(load_weights()["sha256"])[:16]


@lru_cache(maxsize=4)
def load_net(device: str = "cpu"):
    """The shipped net on `device`, in eval mode (one per device and process)."""
    return net_from_weights(load_weights()).eval().to(device)


def net_from_weights(weights) -> Any:
    """A net built and loaded from saved arrays (the shipped file's, or a training run's)."""
    import torch

    net = build_net(tuple(int(width) for width in weights["widths"]))
    net.load_state_dict({name[len("net."):]: torch.from_numpy(weights[name])
                         for name in weights if name.startswith("net.")})
    return net


def net_input(pixels: np.ndarray) -> np.ndarray:
    """float32 3xHxW centred on 0 from a float image in [0, 1] (grey repeated)."""
    rgb = np.repeat(pixels[:, :, None], 3, 2) if pixels.ndim == 2 else pixels
    return np.ascontiguousarray(rgb.transpose(2, 0, 1) - 0.5, dtype=np.float32)


def damage_probability(pixels: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Per-pixel probability of damage (float32 HxW), in row bands to bound memory."""
    band = max(GRID, TILE * TILE // max(pixels.shape[1], 1) // GRID * GRID)
    net = load_net(device)
    return in_bands(pixels, band, TILE_OVERLAP, lambda part: net_probability(net, part, device))


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


def net_probability(net, pixels: np.ndarray, device: str = "cpu") -> np.ndarray:
    """`net`'s sigmoid over a whole (band of a) photo, padded to its pooling grid, averaged
    over VIEWS: damage has no preferred direction, and the average steadies a net this small
    on material unlike its training photos (one view flagged 0.73% of the undamaged benchmark
    photos, eight 0.49%, at 8x the cost)."""
    import torch

    height, width = pixels.shape[:2]
    pad = ((0, -height % GRID), (0, -width % GRID)) + ((0, 0),) * (pixels.ndim - 2)
    padded = np.pad(pixels, pad, mode="symmetric") if any(p[1] for p in pad) else pixels
    total = None
    with torch.inference_mode():
        batch = torch.from_numpy(net_input(padded))[None].to(device)
        for turns, flip in VIEWS:
            view = torch.rot90(batch, turns, (2, 3))
            view = view.flip(3) if flip else view
            score = torch.sigmoid(net(view))
            score = torch.rot90(score.flip(3) if flip else score, -turns, (2, 3))
            total = score if total is None else total + score
    return (total / len(VIEWS))[0, 0].float().cpu().numpy()[:height, :width]


def shifted(threshold: float, sensitivity: float) -> float:
    """Move a calibrated threshold by sensitivity: each 0.1 above 0.5 halves the odds it
    asks for, each 0.1 below doubles them, so the scale is the same on both sides."""
    odds = threshold / (1 - threshold) * 2.0 ** (-(sensitivity - 0.5) * 10)
    return odds / (1 + odds)


def learned_mask(pixels: np.ndarray, sensitivity: float = DEFAULT_SENSITIVITY,
                 device: str = "cpu") -> np.ndarray:
    """Pixels the net scores above the calibrated threshold, with their faint surroundings
    (hysteresis: the blurred ends and fringes of a sure defect stay with it)."""
    probability = damage_probability(pixels, device)
    high = shifted(float(load_weights()["threshold"]), sensitivity)
    return without_picture_lines(hysteresis(probability, high / 2, high))


def hysteresis(score: np.ndarray, low: float, high: float) -> np.ndarray:
    """Pixels above `low` connected to one above `high`: faint ends of a sure scratch stay."""
    candidates = (score > low).astype(np.uint8)
    count, labels = cv2.connectedComponents(candidates, connectivity=8)
    sure = np.zeros(count, bool)
    sure[np.unique(labels[score > high])] = True
    sure[0] = False
    return sure[labels]


# A ruler-straight line this long is a wire, a mast, a horizon or a building's edge far more
# often than a scratch: scratches on prints wander. A flagged part is taken for the picture
# when PICTURE_LINE_LENGTH px of its skeleton or more lie within PICTURE_LINE_DEVIATION px of
# one line and make up PICTURE_LINE_SHARE of it (a mast keeps its braces and joined specks).
# Of 5000 synthetic scratches (drawn to look like a print's, 77-307 px long) one passes; the
# net, which sees about 150 px around a pixel, cannot judge this itself.
PICTURE_LINE_LENGTH = 128
PICTURE_LINE_DEVIATION = 1.5
PICTURE_LINE_SHARE = 0.8


def without_picture_lines(mask: np.ndarray) -> np.ndarray:
    """`mask` less its connected parts that are long, ruler-straight lines."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    straight = np.zeros(count, bool)
    for index in range(1, count):
        x, y, w, h = stats[index, :4]
        # Skip the skeleton where it cannot pass: a thin line of PICTURE_LINE_LENGTH px spans
        # nearly that much along its box's long side (0.7 leaves room for side pixels).
        if max(w, h) >= PICTURE_LINE_LENGTH * 0.7:
            straight[index] = is_straight_line(labels[y:y + h, x:x + w] == index)
    return mask & ~straight[labels] if straight.any() else mask


def is_straight_line(component: np.ndarray) -> bool:
    """Whether the component's skeleton is mostly one long straight line, by a robust (Huber)
    fit that braces and specks joined to it do not bend."""
    from skimage.morphology import skeletonize

    points = np.argwhere(skeletonize(component)).astype(np.float32)
    if len(points) < PICTURE_LINE_LENGTH:
        return False
    direction_y, direction_x, centre_y, centre_x = cv2.fitLine(points, cv2.DIST_HUBER, 0, 0.01,
                                                               0.01).ravel()
    offsets = points - [centre_y, centre_x]
    deviation = np.abs(offsets[:, 0] * direction_x - offsets[:, 1] * direction_y)
    on_line = deviation <= PICTURE_LINE_DEVIATION
    return bool(on_line.sum() >= PICTURE_LINE_LENGTH and on_line.mean() >= PICTURE_LINE_SHARE)


# --- verified --------------------------------------------------------------------------


def verified_mask(image: np.ndarray, sensitivity: float = DEFAULT_SENSITIVITY) -> np.ndarray:
    """Candidates the shipped verifier takes for damage; sensitivity moves its calibrated
    threshold as it moves the learned net's (each 0.1 halves or doubles the odds)."""
    from pipeline.detectors import verified

    calibrated = float(verified.load_verifier()["threshold"])
    return verified.verified_mask(image, calibrated - (sensitivity - 0.5) * 10 * np.log(2.0))


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
    from pipeline.imageio import rgbi_samples

    samples = rgbi_samples(data)
    return None if samples is None else np.ascontiguousarray(samples[:, :, 3])


# --- naive baseline --------------------------------------------------------------------


def tophat_mask(gray: np.ndarray, sensitivity: float = DEFAULT_SENSITIVITY) -> np.ndarray:
    """White and black top-hats with a robust threshold: the naive baseline the issue names."""
    response = tophat_response(gray)
    median = np.median(response)
    spread = 1.4826 * np.median(np.abs(response - median))
    return response > median + (6 - 4 * sensitivity) * max(spread, 1e-3)


def tophat_response(gray: np.ndarray) -> np.ndarray:
    """How far each pixel stands out as a bright or dark speck or line under 7 px across."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    return np.maximum(cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, kernel),
                      cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel))


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
