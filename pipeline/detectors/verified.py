"""Damage as a restorer marks it: pixels that stand out from their neighbourhood (candidates),
kept where a small learned verifier, which sees each candidate's defect whole (its length,
branching, contrast, colour) and its surroundings (texture, edges), takes it for damage.

Real damage on old prints is mostly lighter or darker than what lies around it by a few levels
and narrow: cracks, crackle, scratches, specks, flaked emulsion. A median filter finds all of
that and much picture too (eyes, highlights, fabric, flowers); the verifier tells them apart.
Its weights (a 2-layer perceptron, a few thousand numbers) are in `pipeline/assets/`, trained by
`benchmarks/train_verifier.py` on synthetic damage over clean photos.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.detectors import print_edge as edges
from pipeline.detectors.maps import (
    DEFAULT_SENSITIVITY,
    float_image,
    hysteresis,
    in_bands,
    load_weights,
    luminance,
    odds_factor,
)

WEIGHTS_FILE = "damage_verifier.npz"
# Median windows of the local contrast: 7 px finds cracks and specks up to ~3 px wide, 21 px
# wider cracks and blotches. (A third, 41-px window for wide flakes was tried: on clean
# digital photos it joined the candidates into regions the verifier could not judge.)
SMALL, LARGE = 7, 21
# The wider window's contrast is compared at this share: its background is further away, so
# the same defect stands out more.
LARGE_FACTOR = 2.2
# Hysteresis levels (8-bit levels) of the contrast: a candidate pixel stands LOW above (or
# below) its median and joins one that stands HIGH; on grainy scans NOISE_LOW / NOISE_HIGH
# times the grain's spread, so that grain is not every pixel.
LOW, HIGH = 5.0, 11.0
NOISE_LOW, NOISE_HIGH = 2.0, 4.0
# Surroundings the features weigh: texture and candidate density within these windows (px).
NEAR, FAR = 31, 95
# What the prior network (ImageNet-trained EfficientNet-Lite0, `pipeline.prior`) makes of the
# surroundings: its stride-4 and stride-8 features of the photo shrunk by ENCODER_SCALE (an
# eye, a star, a spoon's highlight, a crack across a wall), ENCODER_CHANNELS numbers a pixel.
# Weights trained without them (no "encoder" entry) leave them out.
ENCODER_SCALE = 0.5
ENCODER_CHANNELS = 24 + 40
# Bands bound memory on large scans; the overlap covers the widest window and most defects.
BAND_PIXELS = 4_000_000
BAND_OVERLAP = 128
# A defect's footprint is wider than the pixels that stand out: the scanner's blur spreads it
# over a ring about 1 px wide, which training leaves out (neither damage nor picture), so the
# verifier never flags it and a fill leaves it as a faint line along each crack. Cracks and
# scratches (defects of FOOTPRINT_MIN_AREA px or more that are long or thin: at most
# FOOTPRINT_MAX_FILL of their box filled, or FOOTPRINT_MIN_ASPECT times longer than wide) grow
# by that ring; specks and blobs stay as found, because what the verifier wrongly takes for
# damage is mostly specks and highlights, and growing them spreads the harm. Chosen on held-out
# prints (astronaut, china, 3 seeds), detect-then-fill dB / undamaged print flagged: as found
# 24.24 / 0.05%, every defect of 16 px grown 24.62 / 0.09%, cracks and scratches grown
# 24.61 / 0.07%; every defect grown, specks too, 24.91, but the picture tests' eyelashes and
# railings went from 0.16% flagged to 0.4-0.7%.
FOOTPRINT_GROWTH = 1
FOOTPRINT_MIN_AREA = 16
FOOTPRINT_MAX_FILL = 0.5
FOOTPRINT_MIN_ASPECT = 3.0
# Which sides of a photo show a tight scan's print edge (`pipeline.detectors.print_edge`) is
# judged on what the verifier flags at these sensitivities, the most any of them shows: at one
# level an edge line can merge with a crack further in (a verifier trained with fainter
# scratches covered print c's right side 0.61 at 0.9, 0.17 at 1.0), and at 0.5 the real tight
# scan's sides are covered only 0.10 and 0.31.
EDGE_SENSITIVITIES = (0.7, 0.8, 0.9, 1.0)
# Handling wears a print at its edges (paper showing, chips, cracks run in from them), and
# there the verifier is least sure: its windows reach past the frame. With `edge_wear`
# (`--detect-edge-wear`, off by default), candidates within EDGE_ZONE of the short side from the
# frame are flagged at EDGE_ZONE_SHIFT log-odds below the threshold (log-odds 0 at the default:
# even odds). On the four real prints (benchmarks/real) 31% of the marked damage lies within
# 8 px of the frame, where the verifier's median log-odds are 0.1 / 2.0 / -1.0 / 1.2 against
# 2.2 / 1.7 / 0.0 / 1.5 further in. Picked on the real prints' split halves (of shifts 2-6 in
# a 5% zone every split picked 4 or more; 4 is the smallest): held-out F1 0.71-0.81 against
# 0.46-0.68 without; wider zones (10%, 20%) took the framed photo's mount line for damage.
# Not the default because it takes picture at the frame for damage: a sepia cup's highlights
# 0.12% -> 1.1% flagged (the picture tests' line is 0.2%), undamaged synthetic prints 0.56% ->
# 0.92%, hair and a rotated scan's edge on real undamaged portraits (up to 0.23%).
EDGE_ZONE = 0.05
EDGE_ZONE_SHIFT = 4.0


@dataclass
class Candidates:
    """Candidate pixels of one photo and the maps their features are read from."""

    gray: np.ndarray
    mask: np.ndarray
    small: np.ndarray
    large: np.ndarray
    background: np.ndarray
    noise: float


def levels(image: np.ndarray) -> np.ndarray:
    """float32 HxW or HxWx3 in 8-bit levels (0-255), whatever the depth; alpha dropped."""
    return float_image(image) * np.float32(255)


def grain(gray: np.ndarray) -> float:
    """The photo's grain in levels: robust spread of gray minus its 3-px median (+0.5 for
    8-bit rounding), from a sample of rows so that it costs little on big scans."""
    rows = gray[:: max(1, gray.shape[0] // 256)]
    detail = rows - cv2.medianBlur(as_uint8(rows), 3).astype(np.float32)
    return float(1.4826 * np.median(np.abs(detail))) + 0.5


def as_uint8(gray: np.ndarray) -> np.ndarray:
    return np.clip(gray + 0.5, 0, 255).astype(np.uint8)


def find_candidates(gray: np.ndarray) -> Candidates:
    """Pixels lighter or darker than their median by LOW..HIGH levels (hysteresis), at two
    window sizes."""
    smooth = cv2.GaussianBlur(gray, (3, 3), 0.6)
    quantized = as_uint8(gray)
    small = smooth - cv2.medianBlur(quantized, SMALL).astype(np.float32)
    background = cv2.medianBlur(quantized, LARGE).astype(np.float32)
    large = smooth - background
    noise = grain(gray)
    strength = np.maximum(np.abs(small), np.abs(large) / LARGE_FACTOR)
    low, high = max(LOW, NOISE_LOW * noise), max(HIGH, NOISE_HIGH * noise)
    return Candidates(gray, hysteresis(strength, low, high), small, large, background, noise)


FEATURES = (
    "small_over_grain", "large_over_grain", "small", "large", "defect_sign",
    "defect_contrast", "defect_contrast_spread", "defect_abs_contrast", "log_area",
    "log_length", "log_extent", "log_extent_share", "box_fill", "length_per_area",
    "log_branches", "log_ends", "branches_per_length", "background_gradient", "texture",
    "density_near", "density_far", "chroma_excess", "background_chroma", "level",
    "background_level", "log_border_distance", "log_area_share", "log_grain",
)


def candidate_features(pixels: np.ndarray, found: Candidates,
                       extra: int = 0) -> tuple[np.ndarray, tuple]:
    """FEATURES of every candidate pixel (N x len(FEATURES) float32, and `extra` columns left
    for the caller to fill) and their (rows, cols)."""
    from skimage.morphology import skeletonize

    mask = found.mask
    height, width = mask.shape
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    rows, cols = np.nonzero(mask)
    label = labels[rows, cols]
    # Each defect's shape: skeleton length, its ends and branch points.
    skeleton = skeletonize(mask)
    neighbours = cv2.filter2D(skeleton.astype(np.uint8), -1, np.ones((3, 3), np.float32))
    skeleton_labels = labels[skeleton]
    skeleton_neighbours = neighbours[skeleton] - 1
    length = np.bincount(skeleton_labels, minlength=count).astype(np.float32)
    ends = np.bincount(skeleton_labels[skeleton_neighbours == 1], minlength=count)
    branches = np.bincount(skeleton_labels[skeleton_neighbours >= 3], minlength=count)
    area = stats[:, 4].astype(np.float32)
    extent = np.maximum(stats[:, 2], stats[:, 3]).astype(np.float32)
    box = (stats[:, 2] * stats[:, 3]).astype(np.float32)
    # Each defect's contrast: its mean, spread and mean magnitude over its pixels.
    small = found.small[rows, cols]
    per_area = np.maximum(area, 1)
    mean = np.bincount(label, small, count) / per_area
    spread = np.sqrt(np.maximum(np.bincount(label, small ** 2, count) / per_area - mean ** 2, 0))
    magnitude = np.bincount(label, np.abs(small), count) / per_area
    # Surroundings: the background's edges, texture, how crowded with candidates it is.
    across = cv2.Sobel(found.background, cv2.CV_32F, 1, 0, ksize=3)
    down = cv2.Sobel(found.background, cv2.CV_32F, 0, 1, ksize=3)
    # numpy's square root, not cv2.magnitude: the latter's last bit depended on where a row
    # fell in memory, so two trainings on the same photos drew different examples.
    gradient = np.sqrt(across * across + down * down) / 8
    texture = cv2.blur(np.abs(found.small), (NEAR, NEAR))
    crowd = mask.astype(np.float32)
    near, far = cv2.blur(crowd, (NEAR, NEAR)), cv2.blur(crowd, (FAR, FAR))
    # Colour: paper showing through is neutral, a highlight keeps its object's colour.
    if pixels.ndim == 3:
        chroma = pixels.max(2) - pixels.min(2)
    else:
        chroma = np.zeros((height, width), np.float32)
    background_chroma = cv2.medianBlur(as_uint8(chroma), LARGE).astype(np.float32)
    gray = found.gray
    border = np.minimum(np.minimum(rows, height - 1 - rows), np.minimum(cols, width - 1 - cols))
    noise = found.noise
    columns = [
        small / noise, found.large[rows, cols] / noise, small / 32, found.large[rows, cols] / 32,
        np.sign(mean[label]), np.abs(mean[label]) / 32, spread[label] / 32,
        magnitude[label] / 32, np.log1p(area[label]), np.log1p(length[label]),
        np.log1p(extent[label]), np.log1p(extent[label] / max(height, width) * 100),
        area[label] / np.maximum(box[label], 1), length[label] / per_area[label],
        np.log1p(branches[label]), np.log1p(ends[label]),
        branches[label] / np.maximum(length[label], 1) * 10, gradient[rows, cols] / 16,
        texture[rows, cols] / noise / 4, near[rows, cols], far[rows, cols],
        (chroma[rows, cols] - background_chroma[rows, cols]) / 32,
        background_chroma[rows, cols] / 64, gray[rows, cols] / 255,
        found.background[rows, cols] / 255, np.log1p(border.astype(np.float32)),
        np.log1p(area[label] / (height * width) * 1e4),
        np.full(len(rows), np.log(noise), np.float32),
    ]
    # Written column by column into one float32 array: stacking the float64 columns and
    # converting cost as much as computing them on a scan dense with candidates.
    features = np.empty((len(rows), len(columns) + extra), np.float32)
    for index, column in enumerate(columns):
        features[:, index] = column
    return features, (rows, cols)


def encoder_features(pixels: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                     out: np.ndarray | None = None) -> np.ndarray:
    """The prior network's stride-4 and stride-8 features (of the photo shrunk by
    ENCODER_SCALE) at each candidate pixel, nearest cell (N x ENCODER_CHANNELS float32,
    written into `out` when given)."""
    import torch

    from pipeline.prior import load_prior

    prior = load_prior()
    height, width = pixels.shape[:2]
    size = (max(8, round(width * ENCODER_SCALE)), max(8, round(height * ENCODER_SCALE)))
    small = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA) / 255.0
    rgb = np.dstack([small] * 3) if small.ndim == 2 else small
    batch = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), np.float32))[None]
    with torch.inference_mode():
        maps = prior.features(prior.normalize(batch), 2)
    if out is None:
        out = np.empty((len(rows), ENCODER_CHANNELS), np.float32)
    start = 0
    for grid in maps:
        # Channels last, so that each candidate's cell is one contiguous row to copy.
        grid = np.ascontiguousarray(grid[0].float().numpy().transpose(1, 2, 0))
        y = np.minimum((rows * grid.shape[0]) // height, grid.shape[0] - 1)
        x = np.minimum((cols * grid.shape[1]) // width, grid.shape[1] - 1)
        out[:, start:start + grid.shape[2]] = grid[y, x]
        start += grid.shape[2]
    return out


def described_candidates(pixels: np.ndarray, encoder: bool) -> tuple[np.ndarray, tuple]:
    """A photo's candidate pixels (of 8-bit `levels`): their features (candidate_features,
    and encoder_features beside them when `encoder`; no rows where there are none) and
    their (rows, cols)."""
    found = find_candidates(luminance(pixels))
    if not found.mask.any():
        width = len(FEATURES) + (ENCODER_CHANNELS if encoder else 0)
        return np.zeros((0, width), np.float32), (np.zeros(0, int), np.zeros(0, int))
    features, (rows, cols) = candidate_features(pixels, found,
                                                ENCODER_CHANNELS if encoder else 0)
    if encoder:
        encoder_features(pixels, rows, cols, out=features[:, len(FEATURES):])
    return features, (rows, cols)


def load_verifier() -> dict[str, np.ndarray]:
    """The shipped verifier (numpy arrays, its calibrated threshold and sha256), read once."""
    return load_weights(WEIGHTS_FILE)


def edge_wear_id() -> str:
    """The rule `edge_wear` adds, recorded in params when it is on."""
    return f"zone {EDGE_ZONE} of the short side, {EDGE_ZONE_SHIFT} log-odds lower"


def verifier_id() -> str:
    """The identity of what decides the masks, recorded in params: the shipped verifier's
    file, the footprint rule and the print-edge rule, so that resume redoes photos when any
    of them changes (the file's sha256 alone, the start of it, while masks were not grown)."""
    rule = (FOOTPRINT_GROWTH, FOOTPRINT_MIN_AREA, FOOTPRINT_MAX_FILL, FOOTPRINT_MIN_ASPECT)
    edge = (edges.BAND, edges.IN_BAND, edges.COVER, edges.INNER, edges.ALONG, edges.SLIVER,
            EDGE_SENSITIVITIES)
    digest = hashlib.sha256(f"{load_verifier()['sha256']} footprint {rule} print edge {edge}"
                            .encode())
    return digest.hexdigest()[:16]


def damage_odds(features: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """The perceptron's log-odds of damage for each row of features."""
    # The features' scaling is folded into the first layer: no scaled copy of the features.
    first = weights["w0"] / weights["std"][:, None]
    layer, out = 0, features @ first + (weights["b0"] - weights["mean"] @ first)
    while f"w{layer + 1}" in weights:
        layer += 1
        out = np.maximum(out, 0, out=out) @ weights[f"w{layer}"] + weights[f"b{layer}"]
    return out[:, 0]


def damage_mask(image: np.ndarray, sensitivity: float = DEFAULT_SENSITIVITY,
                edge_wear: bool = False) -> np.ndarray:
    """Candidates the shipped verifier takes for damage, less a tight scan's print edge;
    sensitivity moves its calibrated log-odds threshold as it moves the learned net's
    (`odds_factor`); `edge_wear` lowers it near the frame (EDGE_ZONE)."""
    return damage_masks(image, (sensitivity,), edge_wear)[0]


def damage_masks(image: np.ndarray, sensitivities: Sequence[float],
                 edge_wear: bool | Sequence[bool] = False) -> list[np.ndarray]:
    """`damage_mask` at each of `sensitivities` (with `edge_wear` for all, or, given one flag
    per sensitivity, for those it names), the verifier's odds and the print edge's sides found
    once: the features and the perceptron are nearly all of the cost, a level's threshold is a
    comparison."""
    odds = verified_odds(image)
    sides = print_edge_sides(odds, image)
    return [flagged_at(image, odds, threshold(level), sides, wear)
            for level, wear in zip(sensitivities, per_level(edge_wear, sensitivities),
                                   strict=True)]


def per_level(edge_wear: bool | Sequence[bool], sensitivities: Sequence[float]) -> list[bool]:
    """`edge_wear` as one flag per sensitivity: the same for all, or one given for each."""
    if isinstance(edge_wear, bool):
        return [edge_wear] * len(sensitivities)
    if len(edge_wear) != len(sensitivities):
        raise ValueError(f"{len(edge_wear)} edge-wear flags for {len(sensitivities)} "
                         "sensitivities")
    return [bool(wear) for wear in edge_wear]


def flagged_at(image: np.ndarray, odds: np.ndarray, log_odds: float,
               sides: list[str] | None = None, edge_wear: bool = False) -> np.ndarray:
    """What `damage_mask` flags where the verifier's `odds` exceed `log_odds` (with
    `edge_wear`, `over_threshold`'s lower one near the frame): the candidates over it with
    their footprint, less a tight scan's print edge (along `sides`, `print_edge_sides`
    unless given)."""
    found = footprint(over_threshold(odds, log_odds, edge_wear))
    return found & ~print_edge(found, odds, image, sides)


def over_threshold(odds: np.ndarray, log_odds: float, edge_wear: bool = False) -> np.ndarray:
    """Where `odds` (the verifier's, or `combined`'s summed ones) exceed `log_odds`, or, with
    `edge_wear`, within EDGE_ZONE of the frame `log_odds` less EDGE_ZONE_SHIFT."""
    over = odds > log_odds
    if not edge_wear:
        return over
    near = near_frame(odds.shape)
    over[near] |= odds[near] > log_odds - EDGE_ZONE_SHIFT
    return over


def near_frame(shape: tuple[int, ...]) -> np.ndarray:
    """The pixels within EDGE_ZONE of the short side from the frame (HxW bool)."""
    height, width = shape[:2]
    reach = max(1, round(EDGE_ZONE * min(height, width)))
    near = np.ones((height, width), bool)
    near[reach:height - reach, reach:width - reach] = False
    return near


def threshold(sensitivity: float) -> float:
    """The log-odds a candidate must reach at `sensitivity`."""
    return float(load_verifier()["threshold"]) + np.log(odds_factor(sensitivity))


def print_edge(found: np.ndarray, odds: np.ndarray, image: np.ndarray,
               sides: list[str] | None = None) -> np.ndarray:
    """What of `found` is a tight scan's print edge (`pipeline.detectors.print_edge`), along
    `sides` (`print_edge_sides` of `odds` unless given)."""
    sides = print_edge_sides(odds, image) if sides is None else sides
    if not sides:
        return np.zeros_like(found)
    return edges.along_sides(found, sides)


def print_edge_sides(odds: np.ndarray, image: np.ndarray) -> list[str]:
    """The sides of the photo that show a tight scan's print edge, judged on the masks at
    EDGE_SENSITIVITIES, so that the answer is the photo's, whatever sensitivity was asked
    for."""
    keenest = odds > threshold(max(EDGE_SENSITIVITIES))
    if not edges.may_show_edge(keenest, FOOTPRINT_GROWTH):
        return []
    judged = [footprint(odds > threshold(level)) for level in EDGE_SENSITIVITIES]
    return edges.edge_sides(judged, luminance(levels(image)))


def footprint(found: np.ndarray) -> np.ndarray:
    """The found pixels, with each crack and scratch grown by FOOTPRINT_GROWTH: the ring of
    blur around it."""
    if not found.any():
        return found
    count, labels, stats, _ = cv2.connectedComponentsWithStats(found.astype(np.uint8), 8)
    width, height, area = (stats[:, column].astype(np.float32) for column in (2, 3, 4))
    filled = area / (width * height)
    aspect = np.maximum(width, height) / np.minimum(width, height)
    lines = (area >= FOOTPRINT_MIN_AREA) & ((filled <= FOOTPRINT_MAX_FILL)
                                             | (aspect >= FOOTPRINT_MIN_ASPECT))
    lines[0] = False
    side = 2 * FOOTPRINT_GROWTH + 1
    grown = cv2.dilate(lines[labels].astype(np.uint8), np.ones((side, side), np.uint8)) > 0
    return found | grown


def verified_odds(image: np.ndarray, weights: dict | None = None) -> np.ndarray:
    """The verifier's log-odds of damage at every candidate pixel (-inf elsewhere), in row
    bands on large scans."""
    weights = weights or load_verifier()
    pixels = levels(image)
    band = max(64, BAND_PIXELS // max(pixels.shape[1], 1))
    if pixels.shape[0] <= band + BAND_OVERLAP:  # one band sees it all
        return odds_map(pixels, weights)
    return in_bands(pixels, band, BAND_OVERLAP, lambda part: odds_map(part, weights))


def odds_map(pixels: np.ndarray, weights: dict) -> np.ndarray:
    """The verifier's log-odds of damage at every candidate pixel (-inf elsewhere)."""
    odds = np.full(pixels.shape[:2], -np.inf, np.float32)
    features, (rows, cols) = described_candidates(pixels, "encoder" in weights)
    if len(rows):
        odds[rows, cols] = damage_odds(features, weights)
    return odds
