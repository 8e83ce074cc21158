"""Seeded synthetic damage of scanned prints: scratches, hairs and dust, with the true mask.

Used to train and measure the damage detector (`pipeline.detect`) and in its tests. Each
defect is drawn as sub-pixel coverage (4x supersampled), softened by the scanner's blur,
and blended toward a near-white or near-black neutral tone, as dust and scratches look on
a scan. The parameters below are documented in `DamageParams`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

# Label values of `Damage.kinds` (0 = undamaged).
KINDS = {"scratch": 1, "hair": 2, "dust": 3}
SUPERSAMPLE = 4
# A pixel belongs to the true mask when the defect, softened by the scanner's blur, moved it
# visibly: by more than MIN_CHANGE of full scale in some channel.
MIN_CHANGE = 8 / 255


class DamageParams(BaseModel):
    """What a scanned print's damage looks like, per 0.25 megapixel of photo.

    Counts scale with the photo's area. The defaults follow what a flatbed scan of a
    handled print at 300-600 dpi shows: a few long emulsion scratches 1-3 px wide, an
    occasional hair (curly, 1-2 px), and tens of dust specks 1-4 px across; dark defects
    dominate on prints (dirt, hair), bright ones on scans of negatives (dust blocks light,
    the inversion turns it white), so both are drawn.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scratches: tuple[int, int] = Field((1, 4), description="Scratches per 0.25 MP (min, max).")
    scratch_width: tuple[float, float] = Field((1.0, 3.0), description="Width in px.")
    scratch_length: tuple[float, float] = Field(
        (0.15, 0.6), description="Length as a share of the long side."
    )
    scratch_bend: float = Field(0.06, description="Std of the heading change per step (rad).")
    hairs: tuple[int, int] = Field((0, 2), description="Hairs per 0.25 MP.")
    hair_width: tuple[float, float] = Field((1.0, 2.0), description="Width in px.")
    hair_length: tuple[float, float] = Field(
        (0.05, 0.2), description="Length as a share of the long side."
    )
    hair_bend: float = Field(0.45, description="Hairs curl: larger heading changes.")
    dust: tuple[int, int] = Field((10, 40), description="Dust specks per 0.25 MP.")
    dust_size: tuple[float, float] = Field((1.0, 4.0), description="Speck diameter in px.")
    bright_share: float = Field(0.5, ge=0, le=1, description="Share of bright defects.")
    opacity: tuple[float, float] = Field(
        (0.55, 1.0), description="How far a defect pulls its pixels to its tone."
    )
    blur_sigma: tuple[float, float] = Field((0.35, 0.8), description="Scanner blur, px.")


@dataclass
class Damage:
    """A damaged photo (input's shape and dtype), its true mask and the kind of each pixel."""

    image: np.ndarray
    mask: np.ndarray
    kinds: np.ndarray
    coverage: np.ndarray


def add_damage(image: np.ndarray, seed: int = 0, params: DamageParams | None = None,
               kinds: tuple[str, ...] = tuple(KINDS)) -> Damage:
    """Damage an HxW or HxWxC uint8/uint16 photo; `kinds` picks which defects to draw."""
    params = params or DamageParams()
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    coverage = np.zeros((height, width), np.float32)
    opacity = np.zeros((height, width), np.float32)
    grey = np.zeros((height, width), np.float32)
    label = np.zeros((height, width), np.uint8)
    for kind in kinds:
        for _ in range(_count(kind, rng, params, height * width)):
            shape, box = _draw(kind, rng, params, height, width)
            # Later defects lie on top of earlier ones.
            on_top = shape > coverage[box]
            coverage[box] = np.maximum(coverage[box], shape)
            grey[box][on_top], opacity[box][on_top] = _tone(rng, params, kind)
            label[box][on_top] = KINDS[kind]
    damaged, change = _blend(image, coverage, opacity, grey, rng.uniform(*params.blur_sigma))
    mask = change >= MIN_CHANGE
    label = _spread_labels(label, mask)
    return Damage(damaged, mask, label, coverage)


def _spread_labels(label: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give each masked pixel the kind of the defect drawn nearest to it."""
    grown = cv2.dilate(label, np.ones((5, 5), np.uint8))
    return np.where(mask, np.where(label > 0, label, grown), 0).astype(np.uint8)


def _count(kind: str, rng, params: DamageParams, pixels: int) -> int:
    low, high = {"scratch": params.scratches, "hair": params.hairs, "dust": params.dust}[kind]
    expected = rng.uniform(low, high) * pixels / 250_000
    count = int(expected) + int(rng.random() < expected - int(expected))
    # A photo asked to carry scratches always gets at least one (tests rely on it).
    return max(count, 1) if kind == "scratch" and high > 0 else count


def _tone(rng, params: DamageParams, kind: str) -> tuple[float, float]:
    """(grey, opacity) of one defect: near white or near black, neutral."""
    # Hairs on prints are mostly dark.
    bright_share = params.bright_share / 2 if kind == "hair" else params.bright_share
    grey = rng.uniform(0.82, 1.0) if rng.random() < bright_share else rng.uniform(0.0, 0.18)
    return grey, rng.uniform(*params.opacity)


def _blend(image: np.ndarray, coverage: np.ndarray, opacity: np.ndarray, grey: np.ndarray,
           sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Blend defects into the photo through the scanner's blur; also return the change."""
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    pixels = image.astype(np.float32) / scale
    weight = cv2.GaussianBlur(coverage, (0, 0), sigma)
    alpha = cv2.GaussianBlur(coverage * opacity, (0, 0), sigma)
    tone = cv2.GaussianBlur(coverage * grey, (0, 0), sigma) / np.maximum(weight, 1e-6)
    if pixels.ndim == 3:
        alpha, tone = alpha[:, :, None], tone[:, :, None]
    damaged = pixels * (1 - alpha) + tone * alpha
    change = np.abs(damaged - pixels)
    change = change.max(axis=2) if change.ndim == 3 else change
    return np.clip(np.rint(damaged * scale), 0, scale).astype(image.dtype), change


def _draw(kind: str, rng, params: DamageParams, height: int,
          width: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """One defect's coverage (float32 in [0, 1]) over the box it occupies, supersampled for
    sub-pixel widths; drawn in its own box so that cost follows the defect, not the photo."""
    s = SUPERSAMPLE
    if kind == "dust":
        outline, thickness = _speck(rng, params, height, width), 0
    else:
        prefix = "scratch" if kind == "scratch" else "hair"
        length = rng.uniform(*getattr(params, f"{prefix}_length")) * max(height, width)
        thickness = max(1, int(round(rng.uniform(*getattr(params, f"{prefix}_width")) * s)))
        outline = _curve(rng, height, width, length, getattr(params, f"{prefix}_bend")) * s
    return outline_coverage(outline, thickness, height, width)


def outline_coverage(outline: np.ndarray, thickness: int, height: int,
                     width: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Sub-pixel coverage (float32 in [0, 1]) of a polyline `thickness` supersampled px wide,
    or of a filled polygon with `thickness` 0, given in SUPERSAMPLE-times pixel coordinates;
    drawn only over the box it occupies within a height x width photo."""
    s = SUPERSAMPLE
    reach = thickness // 2 + 2
    top = int(np.clip(np.floor((outline[:, 1].min() - reach) / s), 0, height))
    left = int(np.clip(np.floor((outline[:, 0].min() - reach) / s), 0, width))
    bottom = int(np.clip(np.ceil((outline[:, 1].max() + reach) / s), top, height))
    right = int(np.clip(np.ceil((outline[:, 0].max() + reach) / s), left, width))
    box = (slice(top, bottom), slice(left, right))
    if bottom == top or right == left:
        return np.zeros((bottom - top, right - left), np.float32), box
    canvas = np.zeros(((bottom - top) * s, (right - left) * s), np.uint8)
    points = np.round(outline - [left * s, top * s]).astype(np.int32)
    if thickness == 0:
        cv2.fillPoly(canvas, [points], 255)
    else:
        cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, 255, thickness,
                      lineType=cv2.LINE_8)
    small = cv2.resize(canvas, (right - left, bottom - top), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255, box


def _curve(rng, height: int, width: int, length: float, bend: float) -> np.ndarray:
    step = 2.0
    heading = rng.uniform(0, 2 * np.pi)
    points = [np.array([rng.uniform(0, width), rng.uniform(0, height)])]
    turn = 0.0
    for _ in range(max(2, int(length / step))):
        # The turn rate drifts smoothly: scratches stay gentle arcs, hairs curl.
        turn = 0.8 * turn + rng.normal(0, bend)
        heading += turn * step / 4
        points.append(points[-1] + step * np.array([np.cos(heading), np.sin(heading)]))
    return np.array(points)


def _speck(rng, params: DamageParams, height: int, width: int) -> np.ndarray:
    """The outline of one dust speck, in supersampled pixels."""
    s = SUPERSAMPLE
    diameter = rng.uniform(*params.dust_size)
    centre = np.array([rng.uniform(0, width), rng.uniform(0, height)]) * s
    angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
    radii = diameter * s / 2 * rng.uniform(0.6, 1.25, angles.size)
    return centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]


def synthetic_infrared(damage: Damage, seed: int = 0) -> np.ndarray:
    """An infrared channel a film scanner would record for `damage` (uint8 HxW).

    Colour dyes pass infrared, so a clean frame reads nearly flat and bright with a faint
    trace of the picture and sensor noise; dust and scratches block it in proportion to
    how much of the pixel they cover.
    """
    rng = np.random.default_rng(seed)
    pixels = damage.image.astype(np.float32) / (65535.0 if damage.image.dtype == np.uint16
                                                 else 255.0)
    luminance = pixels.mean(axis=2) if pixels.ndim == 3 else pixels
    blocked = cv2.GaussianBlur(damage.coverage, (0, 0), 0.6)
    infrared = 0.82 + 0.05 * (luminance - 0.5) - 0.7 * blocked
    infrared += rng.normal(0, 0.01, infrared.shape)
    return np.clip(np.rint(infrared * 255), 0, 255).astype(np.uint8)


def mask_scores(predicted: np.ndarray, true: np.ndarray, tolerance: int = 2) -> dict[str, float]:
    """Pixel precision, recall and F1 of a detected mask, with a tolerance in pixels.

    A detected pixel counts as right when a true one lies within `tolerance` (chessboard
    distance), and a true pixel as found when a detected one does: a mask one pixel wider
    or shifted by the scanner's blur is not an error.
    """
    kernel = np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8)
    near_true = cv2.dilate(true.astype(np.uint8), kernel) > 0
    near_predicted = cv2.dilate(predicted.astype(np.uint8), kernel) > 0
    precision = float((predicted & near_true).sum() / max(predicted.sum(), 1))
    recall = float((true & near_predicted).sum() / max(true.sum(), 1))
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return {"precision": precision, "recall": recall, "f1": f1}
