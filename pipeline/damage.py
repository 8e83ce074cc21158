"""Seeded synthetic damage of scanned prints, with the true mask.

Two generators. `add_damage` (parameters in `DamageParams`) draws scratches, hairs and dust
on the photo as it is: each defect is drawn as sub-pixel coverage (4x supersampled), softened
by the scanner's blur, and blended toward a near-white or near-black neutral tone, as dust
and scratches look on a scan; the shipped detector was trained and is benchmarked on it.
`add_print_damage` (parameters in `PrintDamageParams`) first turns the photo into an old
print (toned, faded, grainy), draws what real old prints show (crack networks and crackle,
long faint broken scratches, flaked emulsion, worn edges and lost corners, creases, specks,
stains, foxing, hairs; mostly lighter than the print, where paper shows), then scans it
(blur, noise, JPEG). Both mark a pixel as damage when the defect moved it by MIN_CHANGE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.spatial import Voronoi

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
    """A damaged photo (input's shape and dtype), its true mask and the kind of each pixel.

    `clean` is the undamaged reference when it is not the input itself: `add_print_damage`
    turns the photo into a scanned print first (toning, grain, blur, JPEG), and `clean` is
    that print scanned without its damage; `add_damage` leaves it None (the input is it).
    """

    image: np.ndarray
    mask: np.ndarray
    kinds: np.ndarray
    coverage: np.ndarray
    clean: np.ndarray | None = None


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


# ---------------------------------------------------------------------------------------------
# Realistic damage of old prints (`add_print_damage`).

# Label values of the print generator: the three of `KINDS` keep their values.
PRINT_KINDS = {**KINDS, "crack": 4, "crackle": 5, "flake": 6, "edge": 7, "crease": 8,
               "blotch": 9, "foxing": 10}
TONINGS = ("gray", "sepia", "colour")
# Step of a growing crack in px: under 2, so that the marks of its steps join into a band.
STEP = 1.5


class PrintDamageParams(BaseModel):
    """What an old print's damage looks like once scanned, per 0.25 megapixel of photo.

    Modelled on old family prints (gelatin emulsion on paper) scanned at 300-600 dpi and
    shrunk to 250-650 px, as in the real development set (`benchmarks/real/`). There nearly
    all damage is LIGHTER than its surroundings: where the emulsion cracks, flakes or is
    scratched, the paper or bare baryta shows, so most kinds blend toward the print's own
    paper tone (with the paper's texture), not toward pure white, and faint ones only partway.
    Counts are (min, max) per 0.25 MP, drawn uniformly per photo and scaled with its area; a
    `*_chance` is the share of photos that carry that kind at all (real prints differ
    widely: 0.8% to 10% of the photo is damage on the four real ones). Sizes are in pixels
    of the photo as given, lengths as a share of its long side.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The print look, applied to the whole photo.
    tonings: tuple[float, float, float] = Field(
        (0.35, 0.4, 0.25), description="Weights of gray, sepia and (faded) colour prints: old "
        "prints are mostly monochrome, often toned (all four real ones are warm); a 2-D photo "
        "is always gray.")
    fade: tuple[float, float] = Field(
        (0.0, 0.2), description="Lost contrast: blacks lifted toward the paper by this share.")
    uneven_fade: tuple[float, float] = Field(
        (0.0, 0.3), description="Further fading toward the edges and in broad patches.")
    grain: tuple[float, float] = Field(
        (0.004, 0.025), description="Film grain std (of full scale), strongest in mid-tones.")
    paper_texture: tuple[float, float] = Field(
        (0.01, 0.04), description="Relative std of the paper's texture where paper shows.")
    blur_sigma: tuple[float, float] = Field(
        (0.3, 0.7), description="Scanner blur (Gaussian std, px), on print and damage alike.")
    scan_noise: tuple[float, float] = Field((0.0, 0.008), description="Scanner noise std.")
    jpeg_chance: float = Field(
        0.7, ge=0, le=1, description="Share of scans saved as JPEG (most archive and web "
        "scans are; the rest stay lossless).")
    jpeg_quality: tuple[int, int] = Field((55, 95), description="JPEG quality (8-bit only).")
    # Cracks: long branching breaks of the emulsion, paper showing through.
    cracks: tuple[int, int] = Field((0, 4), description="Cracks per 0.25 MP.")
    crack_length: tuple[float, float] = Field((0.1, 0.7), description="Share of long side.")
    crack_width: tuple[float, float] = Field((1.0, 3.0), description="Width at its widest.")
    crack_branches: tuple[int, int] = Field((0, 4), description="Side branches per crack.")
    # Crackle: a network of polygonal cells over an area or the whole print.
    crackle_chance: float = Field(0.35, ge=0, le=1, description="Share of crackled prints.")
    crackle_cover: tuple[float, float] = Field(
        (0.15, 1.0), description="Share of the print the crackled area spans.")
    crackle_cell: tuple[float, float] = Field(
        (10.0, 45.0), description="Cell size in px of the fine network; the grown cracks are "
        "spaced this over crackle_keep^0.75 (10-45 px cells, as on the real crackled prints).")
    crackle_width: tuple[float, float] = Field((0.9, 2.4), description="Line width in px.")
    crackle_keep: tuple[float, float] = Field(
        (0.25, 0.7), description="How cracked: the share of fine cell edges that crack "
        "(real networks are open, not every cell closed), and denser grown cracks.")
    # Scratches: long faint ones that run straight across the picture and break and resume,
    # and short bright ones (handling, abrasion).
    scratches: tuple[int, int] = Field((0, 4), description="Long scratches per 0.25 MP.")
    scratch_length: tuple[float, float] = Field((0.25, 1.2), description="Share of long side.")
    scratch_width: tuple[float, float] = Field((0.8, 3.0), description="Width in px.")
    scratch_strength: tuple[float, float] = Field(
        (0.12, 0.7), description="How far toward paper a scratch pulls (faint to plain).")
    short_scratches: tuple[int, int] = Field((0, 80), description="Short ones per 0.25 MP.")
    short_length: tuple[float, float] = Field((4.0, 40.0), description="Length in px.")
    # Flakes, worn edges and chipped or lost corners: large areas of paper.
    flakes: tuple[int, int] = Field((0, 5), description="Flaked areas per 0.25 MP.")
    flake_size: tuple[float, float] = Field((3.0, 40.0), description="Diameter in px.")
    edge_chance: float = Field(0.5, ge=0, le=1, description="Share of prints with worn edges.")
    edge_width: tuple[float, float] = Field((0.6, 3.5), description="Worn band's mean width.")
    corner_chance: float = Field(0.35, ge=0, le=1, description="Share with a lost corner.")
    corner_size: tuple[float, float] = Field((0.03, 0.15), description="Share of short side.")
    # Creases: a fold line with a light and a dark side.
    creases: tuple[int, int] = Field((0, 1), description="Creases per 0.25 MP.")
    crease_length: tuple[float, float] = Field((0.08, 0.5), description="Share of long side.")
    # Specks of every size (dark dirt and white dust or pin-holes), stains, foxing, hairs.
    specks: tuple[int, int] = Field((10, 160), description="Specks per 0.25 MP.")
    speck_size: tuple[float, float] = Field(
        (1.0, 9.0), description="Diameter range; small ones far more common (log-uniform^2).")
    dark_specks: float = Field(0.25, ge=0, le=1, description="Share of dark specks.")
    blotches: tuple[int, int] = Field((0, 1), description="Stains per 0.25 MP.")
    blotch_size: tuple[float, float] = Field((12.0, 90.0), description="Diameter in px.")
    foxing_chance: float = Field(0.2, ge=0, le=1, description="Share of prints with foxing.")
    foxing_spots: tuple[int, int] = Field((4, 30), description="Brown spots per cluster.")
    hairs: tuple[int, int] = Field((0, 1), description="Hairs per 0.25 MP.")

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> PrintDamageParams:
        for name, value in self:
            if name != "tonings" and isinstance(value, tuple) and not 0 <= value[0] <= value[1]:
                raise ValueError(f"{name} must be (min, max) with 0 <= min <= max, got {value}")
        if min(self.tonings) < 0 or sum(self.tonings) <= 0:
            raise ValueError(f"tonings must be weights >= 0 with a positive sum, got "
                             f"{self.tonings}")
        return self


@dataclass
class _Print:
    """The print being damaged: float RGB in [0, 1], its paper tone and texture, the label
    and coverage of each pixel, and the points of cracks drawn so far (flakes start there)."""

    pixels: np.ndarray
    paper: np.ndarray
    texture: np.ndarray
    neutral: bool
    label: np.ndarray
    coverage: np.ndarray
    crack_points: list


def add_print_damage(photo: np.ndarray, seed: int = 0,
                     params: PrintDamageParams | None = None,
                     kinds: tuple[str, ...] = tuple(PRINT_KINDS)) -> Damage:
    """Turn an HxW or HxWx3 uint8/uint16 photo into a scanned old print with realistic damage.

    The photo becomes a print (toned gray, sepia or faded colour, with film grain), `kinds`
    are drawn on it (all by default), and both the damaged and the undamaged print are
    scanned alike (blur, noise, JPEG). `Damage.clean` is the undamaged scan; `mask` marks the
    pixels the damage moved by at least MIN_CHANGE in some channel (before the JPEG, which
    is the scan's, not the defect's); `kinds` labels them with `PRINT_KINDS`. Same seed, same
    result; the photo is not modified.
    """
    params = params or PrintDamageParams()
    unknown = set(kinds) - set(PRINT_KINDS)
    if unknown:
        raise ValueError(f"unknown damage kind {sorted(unknown)[0]!r}; choose from "
                         f"{', '.join(PRINT_KINDS)}")
    if (photo.dtype not in (np.uint8, np.uint16) or photo.ndim not in (2, 3)
            or (photo.ndim == 3 and photo.shape[2] != 3)):
        raise ValueError(f"expected an HxW or HxWx3 uint8/uint16 photo, got {photo.dtype} "
                         f"{photo.shape}")
    rng = np.random.default_rng(seed)
    scale = 65535.0 if photo.dtype == np.uint16 else 255.0
    rgb = photo.astype(np.float32) / scale
    rgb = np.dstack([rgb] * 3) if rgb.ndim == 2 else rgb
    toning = "gray" if photo.ndim == 2 else TONINGS[rng.choice(3, p=_weights(params.tonings))]
    sheet = _make_print(rng, params, rgb, toning)
    clean = sheet.pixels.copy()
    area = photo.shape[0] * photo.shape[1] / 250_000
    for kind in PRINT_KINDS:  # a fixed order, so that a seed draws the same damage
        if kind in kinds:
            _DRAW[kind](rng, params, sheet, area)
    return _scan(rng, params, photo, clean, sheet)


def _weights(weights) -> np.ndarray:
    weights = np.asarray(weights, float)
    return weights / weights.sum()


def _smooth_noise(rng, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian noise blurred to features about `sigma` px wide, scaled to unit std; wide
    features are made at a coarser grid and enlarged (the same look, a fraction of the cost)."""
    shrink = max(1.0, sigma / 3)
    small = (max(2, int(np.ceil(shape[0] / shrink))), max(2, int(np.ceil(shape[1] / shrink))))
    noise = cv2.GaussianBlur(rng.standard_normal(small).astype(np.float32), (0, 0),
                             sigma / shrink)
    if small != tuple(shape):
        noise = cv2.resize(noise, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return noise / max(float(noise.std()), 1e-6)


def _make_print(rng, params: PrintDamageParams, rgb: np.ndarray, toning: str) -> _Print:
    """The photo as a print: toned, faded and grainy, with the tone and texture of its paper."""
    height, width = rgb.shape[:2]
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    if toning == "gray":
        paper = np.full(3, rng.uniform(0.86, 0.98))
        shadow = np.full(3, rng.uniform(0.02, 0.08))
    elif toning == "sepia":
        # From a warm gray to a deep brown tone: how strongly the print was toned varies.
        strength = rng.uniform(0.25, 1.0)
        paper = 0.95 - strength * (np.array([0.01, 0.07, 0.21]) + rng.uniform(-0.04, 0.04, 3))
        shadow = 0.05 + strength * np.array([0.11, 0.04, 0.0]) * rng.uniform(0.5, 1.5)
    else:
        paper = np.array([0.95, 0.92, 0.82]) + rng.uniform(-0.04, 0.04, 3)
        shadow = np.array([0.06, 0.05, 0.05])
    paper = np.clip(paper, 0.6, 1.0).astype(np.float32)
    shadow = shadow + rng.uniform(*params.fade) * (paper - shadow)
    if toning == "colour":
        # A faded colour print: dyes lose saturation and the cyan and yellow dyes fade
        # first, leaving a warm (red-yellow) cast.
        grey = luma[:, :, None]
        rgb = grey + rng.uniform(0.5, 1.0) * (rgb - grey)
        rgb = rgb * np.array([1.0, rng.uniform(0.9, 1.0), rng.uniform(0.75, 0.97)], np.float32)
        pixels = shadow + (paper - shadow) * rgb
    else:
        # Sepia toning runs from a brown-black through warm mid-tones to the paper.
        mid = (shadow + paper) / 2 * (np.array([1.05, 0.98, 0.88]) if toning == "sepia" else 1)
        t = luma[:, :, None]
        pixels = np.where(t < 0.5, shadow + (mid - shadow) * 2 * t,
                          mid + (paper - mid) * (2 * t - 1))
    # Prints fade unevenly: more toward their edges and in broad patches (light, air).
    yy, xx = np.ogrid[0:height, 0:width]
    border = np.minimum(np.minimum(yy, height - 1 - yy), np.minimum(xx, width - 1 - xx))
    edge = np.clip(1 - border / (0.35 * min(height, width)), 0, 1) ** 2
    patches = np.clip(_smooth_noise(rng, (height, width), max(height, width) / 6), 0, None)
    faded = rng.uniform(*params.uneven_fade) * np.clip(0.7 * edge + 0.4 * patches, 0, 1)
    pixels = pixels + (paper - pixels) * faded[:, :, None].astype(np.float32)
    grain = _smooth_noise(rng, (height, width), rng.uniform(0.5, 1.0))
    strength = rng.uniform(*params.grain) * 4 * (luma * (1 - luma) + 0.05)
    pixels = pixels + (grain * strength)[:, :, None]
    texture = 1 + rng.uniform(*params.paper_texture) * (
        0.7 * _smooth_noise(rng, (height, width), 0.8)
        + 0.5 * _smooth_noise(rng, (height, width), 5.0))
    neutral = toning == "gray"
    return _Print(np.clip(pixels, 0, 1).astype(np.float32), paper, texture.astype(np.float32),
                  neutral, np.zeros((height, width), np.uint8),
                  np.zeros((height, width), np.float32), [])


def _paint(sheet: _Print, kind: str, alpha: np.ndarray, box: tuple[slice, slice],
           colour: np.ndarray | str) -> None:
    """Blend `colour` (RGB, or "paper": the paper's tone with its texture) into the box by
    `alpha` (float32 HxW over the box); later defects lie on top of earlier ones."""
    if not alpha.size or not alpha.any():
        return
    region = sheet.pixels[box]
    if isinstance(colour, str):
        colour = sheet.paper * sheet.texture[box][:, :, None]
    elif sheet.neutral:
        colour = np.full(3, float(np.dot(colour, [0.299, 0.587, 0.114])), np.float32)
    a = alpha[:, :, None]
    sheet.pixels[box] = region * (1 - a) + np.asarray(colour, np.float32) * a
    sheet.label[box][alpha > 0.02] = PRINT_KINDS[kind]
    sheet.coverage[box] = np.maximum(sheet.coverage[box], alpha)


def _how_many(rng, span: tuple[int, int], area: float) -> int:
    expected = rng.uniform(*span) * area
    return int(expected) + int(rng.random() < expected - int(expected))


def _lines(paths: list, height: int, width: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Coverage of many polylines, each (points Nx2 in px, width px, strength in [0, 1]),
    supersampled, over the box they span; where lines cross, the stronger shows."""
    s = SUPERSAMPLE
    paths = [p for p in paths if len(p[0]) >= 2]
    if not paths:
        return np.zeros((0, 0), np.float32), (slice(0, 0), slice(0, 0))
    every = np.concatenate([p[0] for p in paths])
    reach = max(p[1] for p in paths) + 2
    top = int(np.clip(np.floor(every[:, 1].min() - reach), 0, height))
    left = int(np.clip(np.floor(every[:, 0].min() - reach), 0, width))
    bottom = int(np.clip(np.ceil(every[:, 1].max() + reach), top, height))
    right = int(np.clip(np.ceil(every[:, 0].max() + reach), left, width))
    box = (slice(top, bottom), slice(left, right))
    if bottom == top or right == left:
        return np.zeros((bottom - top, right - left), np.float32), box
    canvas = np.zeros(((bottom - top) * s, (right - left) * s), np.uint8)
    for points, line_width, strength in sorted(paths, key=lambda p: p[2]):
        scaled = np.round((points - [left, top]) * s).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [scaled], False, int(round(255 * strength)),
                      max(1, int(round(line_width * s))), lineType=cv2.LINE_8)
    small = cv2.resize(canvas, (right - left, bottom - top), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255, box


def _walk(rng, start, heading: float, length: float, bend: float, jag: float,
          step: float = 2.0) -> np.ndarray:
    """A path of `length` px from `start`: its heading drifts by `bend` (rad per step, smooth)
    and each point is jittered across it by `jag` px (cracks are jagged, scratches not)."""
    n = max(2, int(length / step))
    turns = np.cumsum(rng.normal(0, bend, n)) * 0.5
    turns -= np.linspace(0, turns[-1], n)  # bends wander but keep the overall heading
    angles = heading + turns
    steps = step * np.stack([np.cos(angles), np.sin(angles)], 1)
    points = np.asarray(start, float) + np.cumsum(steps, 0) - steps[0]
    across = np.stack([-np.sin(angles), np.cos(angles)], 1)
    return points + across * rng.normal(0, jag, (n, 1))


def _pieces(rng, points: np.ndarray, width: float, strength: float, chunk: int,
            gaps: float = 0.0, chips: float = 0.0) -> list:
    """Split a path into pieces of `chunk` points whose width and strength vary smoothly
    along it (and taper at its ends); with `gaps`, that share of it is missing; with
    `chips`, that share of pieces is 1.3-1.9 times as wide, bulging to one side (a crack's
    edge chipped off)."""
    paths = []
    n = len(points)
    wobble = np.cumsum(rng.normal(0, 0.3, n // chunk + 2))
    for index, begin in enumerate(range(0, n - 1, chunk)):
        if gaps and rng.random() < gaps:
            continue
        t = begin / max(n - 1, 1)
        taper = min(1.0, 6 * t, 6 * (1 - t)) * 0.6 + 0.4
        factor = float(np.clip(1 + 0.35 * np.sin(wobble[index]), 0.4, 1.4))
        piece = points[begin:begin + chunk + 1]
        if chips and rng.random() < chips and len(piece) > 1:
            # The chip is on one side: widen the piece and move it over by the extra width.
            wider = rng.uniform(1.3, 1.9)
            along = piece[-1] - piece[0]
            side = np.array([-along[1], along[0]]) / max(float(np.hypot(*along)), 1e-6)
            piece = piece + side * rng.choice([-1, 1]) * (wider - 1) * width * factor / 2
            factor *= wider
        paths.append((piece, max(0.5, width * taper * factor),
                      float(np.clip(strength * (0.75 + 0.25 * factor), 0.05, 1))))
    return paths


def _draw_cracks(rng, params: PrintDamageParams, sheet: _Print, area: float) -> None:
    height, width = sheet.label.shape
    long_side = max(height, width)
    paths = []
    for _ in range(_how_many(rng, params.cracks, area)):
        # Cracks often start at the print's edge, where it was bent, and run inward.
        heading = rng.uniform(0, 2 * np.pi)
        if rng.random() < 0.5:
            side = rng.integers(4)
            start = [(rng.uniform(0, width), 0), (rng.uniform(0, width), height),
                     (0, rng.uniform(0, height)), (width, rng.uniform(0, height))][side]
            heading = [np.pi / 2, -np.pi / 2, 0.0, np.pi][side] + rng.uniform(-1.0, 1.0)
        else:
            start = (rng.uniform(0, width), rng.uniform(0, height))
        queue = [(start, heading,
                  rng.uniform(*params.crack_length) * long_side,
                  rng.uniform(*params.crack_width), 0)]
        while queue:
            origin, heading, length, line_width, depth = queue.pop()
            points = _walk(rng, origin, heading, length, 0.05, 0.4)
            paths += _pieces(rng, points, line_width, rng.uniform(0.6, 1.0), 4, chips=0.08)
            sheet.crack_points.extend(points[:: 8].tolist())
            if depth < 2:
                for _ in range(rng.integers(*params.crack_branches, endpoint=True) >> depth):
                    at = points[rng.integers(len(points))]
                    queue.append((at, heading + rng.choice([-1, 1]) * rng.uniform(0.4, 1.3),
                                  length * rng.uniform(0.15, 0.5), line_width * 0.7,
                                  depth + 1))
    _relief(rng, sheet, "crack", paths, 0.35)
    alpha, box = _lines(paths, height, width)
    _paint(sheet, "crack", alpha * rng.uniform(0.7, 1.0), box, "paper")


def _relief(rng, sheet: _Print, kind: str, paths: list, chance: float) -> None:
    """With `chance`, a faint shadow beside the cracks in `paths`, all on the side away from
    the scanner's light: the emulsion's edge lifts along a crack (drawn before the crack,
    which covers it where they overlap, so the shadow shows on one side)."""
    if not paths or rng.random() >= chance:
        return
    height, width = sheet.label.shape
    turn = rng.uniform(0, 2 * np.pi)
    shift = np.array([np.cos(turn), np.sin(turn)]) * rng.uniform(0.8, 1.6)
    shadow = [(points + shift, line_width, strength) for points, line_width, strength in paths]
    alpha, box = _lines(shadow, height, width)
    _paint(sheet, kind, alpha * rng.uniform(0.15, 0.4), box, sheet.paper * 0.1)


def _region(rng, params: PrintDamageParams, height: int, width: int) -> np.ndarray:
    """Where a crackle network lies: a soft area spanning a share of the print, often from
    a corner or an edge (where prints are handled and bent), or everywhere."""
    cover = rng.uniform(*params.crackle_cover)
    blotchy = _smooth_noise(rng, (height, width), max(height, width) / 10)
    if cover > 0.85:
        field = 1.2 + 0.5 * blotchy
    else:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        cy, cx = rng.choice([0, 0.5, 1]) * height, rng.choice([0, 0.5, 1]) * width
        reach = cover * np.hypot(height, width)
        field = 1 - np.hypot(yy - cy, xx - cx) / reach + 0.35 * blotchy
    return np.clip(field * 2, 0, 1)


def _draw_crackle(rng, params: PrintDamageParams, sheet: _Print, area: float) -> None:
    if rng.random() >= params.crackle_chance:
        return
    height, width = sheet.label.shape
    region = _region(rng, params, height, width)
    keep = rng.uniform(*params.crackle_keep)
    line_width = rng.uniform(*params.crackle_width)
    cell = rng.uniform(*params.crackle_cell)
    # Long cracks that branch off each other and end where they meet an older one (the
    # T-junctions of real crackle), then a finer polygonal network between them.
    # Where the emulsion has lifted (broad patches), its cracks open into wider, chipped bands.
    lifted = np.clip(_smooth_noise(rng, (height, width), max(height, width) / 5), 0, None)
    lift = rng.uniform(0, 0.6)
    paths = []
    for points, generation in _grow_network(rng, region, cell / keep ** 0.75, height, width):
        x, y = points[len(points) // 2].astype(int)
        opened = lift * min(1.0, lifted[min(max(y, 0), height - 1), min(max(x, 0), width - 1)])
        paths += _pieces(rng, points, max(0.7, line_width * 0.8 ** generation * (1 + opened)),
                         rng.uniform(0.6, 1.0), 4, chips=0.08 + 0.1 * opened)
        sheet.crack_points.extend(points[::10].tolist())
    size, share = max(cell * 0.5, 8.0), keep * 0.1
    ends = _voronoi_edges(rng, height, width, size)
    middle = ((ends[:, :2] + ends[:, 2:]) / 2).astype(int)
    at = (np.clip(middle[:, 1], 0, height - 1), np.clip(middle[:, 0], 0, width - 1))
    # Fine cracks run on from edge to edge: keep edges where a smooth field is high, so that
    # they join into open networks instead of scattered dashes.
    along = _smooth_noise(rng, (height, width), size * 1.5)[at]
    chance = region[at] * np.clip(share + 0.35 * along + 0.15 * rng.standard_normal(len(ends)),
                                  0, 1)
    for row in ends[rng.random(len(ends)) < chance]:
        paths.append((_jagged_edge(rng, row[:2], row[2:]),
                      line_width * 0.6 * rng.uniform(0.6, 1.3), rng.uniform(0.6, 1.0)))
    _relief(rng, sheet, "crackle", paths, 0.2)
    alpha, box = _lines(paths, height, width)
    _paint(sheet, "crackle", alpha * rng.uniform(0.8, 1.0), box, "paper")


def _grow_network(rng, region: np.ndarray, cell: float, height: int, width: int) -> list:
    """Cracks grown one after another, as a drying or bent emulsion breaks: each starts on an
    older crack (or, now and then, anywhere in `region`), leaves it at about a right angle,
    wanders a little and stops where it meets another crack or leaves the region; together
    they cut the region into cells about `cell` px across. Returns (points Nx2, generation)."""
    target = float(region.sum()) * 2 / cell
    occupied = [[0] * width for _ in range(height)]
    region = region.tolist()
    cracks, anchors, total = [], [], 0.0
    for attempt in range(int(target / 4) + 50):
        if total >= target:
            break
        if anchors and rng.random() < 0.85:
            x, y, heading, generation = anchors[rng.integers(len(anchors))]
            heading += rng.choice([-1, 1]) * (np.pi / 2 + rng.normal(0, 0.3))
            generation += 1
            # No new crack where the cells are already small: real networks are fairly even.
            if _crack_within(occupied, x, y, heading, cell / 2, height, width):
                continue
        else:
            y, x = rng.uniform(0, height), rng.uniform(0, width)
            if rng.random() > region[int(y)][int(x)]:
                continue
            heading, generation = rng.uniform(0, 2 * np.pi), 0
        ident, stop = attempt + 1, rng.uniform(0, 1)
        limit = max(height, width)  # steps of STEP px: one and a half times the long side
        # Tortuous at a few pixels' scale but on course overall: the heading wavers about a
        # course (mean-reverting, std about 0.2 rad) that changes only at rare kinks.
        wobble = rng.normal(0, 0.09, limit).tolist()
        kinks = ((rng.random(limit) < 0.022) * rng.normal(0, 0.4, limit)).tolist()
        points, waver, x, y, course = [(x, y)], 0.0, float(x), float(y), float(heading)
        # Plain floats and lists in this loop: it runs once per step of every crack.
        for step in range(limit):
            waver = 0.86 * waver + wobble[step]
            course += kinks[step]
            heading = course + waver
            dx, dy = math.cos(heading), math.sin(heading)
            x, y = x + STEP * dx, y + STEP * dy
            col, row = int(x), int(y)
            if not (0 <= col < width and 0 <= row < height) or region[row][col] < stop:
                break
            points.append((x, y))
            # Look 2 px ahead (past this crack's own marks) for an older crack, and run
            # into it: the T-junction.
            ahead_x, ahead_y = x + 2 * dx, y + 2 * dy
            if step > 1 and 0 <= ahead_x < width and 0 <= ahead_y < height:
                mark = occupied[int(ahead_y)][int(ahead_x)]
                if mark and mark != ident:
                    points.append((ahead_x, ahead_y))
                    break
            # Mark a plus around the step (others' marks kept): a band no crack slips through.
            line = occupied[row]
            for index in (col - 1, col, col + 1):
                if 0 <= index < width and not line[index]:
                    line[index] = ident
            for other in (row - 1, row + 1):
                if 0 <= other < height and not occupied[other][col]:
                    occupied[other][col] = ident
        if len(points) < 4:
            continue
        points = np.array(points)
        points[1:-1] += rng.normal(0, 0.3, (len(points) - 2, 2))  # jagged at the pixel scale
        total += len(points) * STEP
        cracks.append((points, generation))
        spacing = max(3, int(cell / 3 / STEP))
        for index in range(spacing, len(points) - spacing, spacing):
            dx, dy = points[index + 2] - points[index - 2]
            anchors.append((*points[index], float(np.arctan2(dy, dx)), generation))
    return cracks


def _crack_within(occupied: list, x: float, y: float, heading: float, reach: float,
                  height: int, width: int) -> bool:
    """Whether a crack lies within `reach` px from (x, y) along `heading` (past its own)."""
    dx, dy = math.cos(heading), math.sin(heading)
    for distance in range(3, int(reach) + 1, 2):
        col, row = int(x + distance * dx), int(y + distance * dy)
        if not (0 <= col < width and 0 <= row < height):
            return False
        if occupied[row][col]:
            return True
    return False


def _voronoi_edges(rng, height: int, width: int, cell: float) -> np.ndarray:
    """The edges (rows x0, y0, x1, y1) of a Voronoi tessellation of random points about
    `cell` px apart, over the photo and a cell around it. The points are scattered at random
    (cells of very unequal size, as emulsion breaks) in a space stretched along a random
    direction (cells elongated one way, as on a print bent along one axis)."""
    margin = 2 * cell
    stretch, turn = rng.uniform(1.0, 1.8), rng.uniform(0, np.pi)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    squash = rotation @ np.diag([stretch, 1 / stretch]) @ rotation.T
    count = int((height + 2 * margin) * (width + 2 * margin) / cell ** 2)
    centre = np.array([width / 2, height / 2])
    points = rng.uniform([-margin, -margin], [width + margin, height + margin], (count, 2))
    # Voronoi of the points squashed, mapped back: the cells come out stretched.
    diagram = Voronoi((points - centre) @ np.linalg.inv(squash).T)
    vertices = diagram.vertices @ squash.T + centre
    ridges = np.asarray(diagram.ridge_vertices)
    ridges = ridges[(ridges >= 0).all(axis=1)]  # drop the open ridges at infinity
    ends = np.hstack([vertices[ridges[:, 0]], vertices[ridges[:, 1]]])
    near = ((ends[:, [0, 2]] > -cell) & (ends[:, [0, 2]] < width + cell)
            & (ends[:, [1, 3]] > -cell) & (ends[:, [1, 3]] < height + cell)).any(axis=1)
    short = np.hypot(ends[:, 2] - ends[:, 0], ends[:, 3] - ends[:, 1]) < 4 * cell
    return ends[near & short].astype(float)


def _jagged_edge(rng, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A cell edge from a to b as a crack runs it: straight runs with a kink or two, jittered
    across by a fraction of a pixel; its ends stay put, so the network stays joined."""
    length = float(np.hypot(*(b - a)))
    normal = np.array([a[1] - b[1], b[0] - a[0]]) / max(length, 1e-6)
    kinks = np.sort(rng.uniform(0.2, 0.8, int(rng.integers(1, 3))))
    knots_t = np.r_[0.0, kinks, 1.0]
    knots_off = np.r_[0.0, rng.normal(0, 0.08 * length, kinks.size), 0.0]
    n = max(3, int(length / 1.5))
    t = np.linspace(0, 1, n)
    offset = np.interp(t, knots_t, knots_off) + rng.normal(0, 0.3, n) * np.sin(np.pi * t)
    return a + (b - a) * t[:, None] + normal * offset[:, None]


def _draw_scratch(rng, params: PrintDamageParams, sheet: _Print, area: float) -> None:
    height, width = sheet.label.shape
    long_side = max(height, width)
    paths = []
    for _ in range(_how_many(rng, params.scratches, area)):
        # Long scratches: nearly straight, faint, broken; sometimes a few run side by side.
        heading = rng.uniform(0, 2 * np.pi)
        start = [rng.uniform(0, width), rng.uniform(0, height)]
        length = rng.uniform(*params.scratch_length) * long_side
        strength = rng.uniform(*params.scratch_strength)
        for offset in range(1 + int(rng.random() < 0.25) * int(rng.integers(1, 4))):
            shift = offset * rng.uniform(2, 6) * np.array([-np.sin(heading), np.cos(heading)])
            points = _walk(rng, np.add(start, shift), heading, length, 0.01, 0.05, 3.0)
            paths += _pieces(rng, points, rng.uniform(*params.scratch_width), strength,
                             int(rng.integers(3, 12)), gaps=rng.uniform(0, 0.35))
    # Short ones from handling: brighter, many of them in patches rubbed one way.
    patches = [((rng.uniform(0, width), rng.uniform(0, height)), rng.uniform(0, np.pi),
                rng.uniform(15, 60)) for _ in range(int(rng.integers(1, 4)))]
    for _ in range(_how_many(rng, params.short_scratches, area)):
        if rng.random() < 0.5:
            (cx, cy), heading, spread = patches[rng.integers(len(patches))]
            start = [cx + rng.normal(0, spread), cy + rng.normal(0, spread)]
            heading += rng.normal(0, 0.3) + np.pi * rng.integers(2)
        else:
            start = [rng.uniform(0, width), rng.uniform(0, height)]
            heading = rng.uniform(0, 2 * np.pi)
        points = _walk(rng, start, heading, rng.uniform(*params.short_length), 0.03, 0.15, 1.5)
        paths += _pieces(rng, points, rng.uniform(0.8, 2.2), rng.uniform(0.3, 1.0), 4)
    alpha, box = _lines(paths, height, width)
    _paint(sheet, "scratch", alpha, box, "paper")


def _blob(rng, size: float, roughness: float = 0.6) -> np.ndarray:
    """An irregular soft-edged blob about `size` px across (float32 coverage), elongated and
    turned at random, its outline ragged at large and small scale."""
    side = int(size * 1.8) + 6
    yy, xx = (np.mgrid[0:side, 0:side].astype(np.float32) - side / 2) / (size / 2)
    angle, stretch = rng.uniform(0, np.pi), rng.uniform(1, 2.2)
    u = (xx * np.cos(angle) + yy * np.sin(angle)) / stretch ** 0.5
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) * stretch ** 0.5
    field = 1 - (u * u + v * v)
    field += roughness * 0.5 * _smooth_noise(rng, (side, side), max(size / 6, 1.0))
    field += roughness * 0.25 * _smooth_noise(rng, (side, side), 0.8)
    return np.clip(field / 0.15 + 0.5, 0, 1).astype(np.float32)


def _place(sheet: _Print, shape: np.ndarray, cy: float, cx: float):
    """Clip `shape` centred at (cy, cx) to the photo: (shape part, box) or None."""
    height, width = sheet.label.shape
    side_y, side_x = shape.shape
    top, left = int(cy) - side_y // 2, int(cx) - side_x // 2
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + side_y, height), min(left + side_x, width)
    if y1 <= y0 or x1 <= x0:
        return None
    return shape[y0 - top:y1 - top, x0 - left:x1 - left], (slice(y0, y1), slice(x0, x1))


def _draw_flake(rng, params: PrintDamageParams, sheet: _Print, area: float) -> None:
    height, width = sheet.label.shape
    # A badly cracked print loses small pieces along its cracks besides the flakes counted.
    along = int(rng.uniform(0, 1) * len(sheet.crack_points) / 25)
    for index in range(_how_many(rng, params.flakes, area) + along):
        # Emulsion flakes off where it is already broken: along cracks and at the edges.
        if sheet.crack_points and (index < along or rng.random() < 0.6):
            cx, cy = sheet.crack_points[rng.integers(len(sheet.crack_points))]
        elif rng.random() < 0.4:
            cx, cy = rng.choice([0, width]), rng.uniform(0, height)
        else:
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        size = np.exp(rng.uniform(*np.log(params.flake_size)))
        size = min(size, rng.uniform(3, 12)) if index < along else size
        shape, box = outline_coverage(_flake_outline(rng, size, cx, cy), 0, height, width)
        _paint(sheet, "flake", shape * rng.uniform(0.85, 1.0), box, "paper")


def _flake_outline(rng, size: float, cx: float, cy: float) -> np.ndarray:
    """A flaked-off piece of emulsion, in supersampled px: a polygon of a few straight,
    jagged sides (it breaks along cracks), elongated and turned at random."""
    corners = int(rng.integers(4, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
    radii = size / 2 * rng.uniform(0.45, 1.1, corners)
    outline = np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
    outline *= [rng.uniform(1, 2.5), 1]
    turn = rng.uniform(0, np.pi)
    outline = outline @ np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]])
    sides = []
    for a, b in zip(outline, np.roll(outline, -1, 0), strict=True):
        n = max(2, int(np.hypot(*(b - a))))
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        # Ragged at two scales: small bites out of each side and pixel-scale fraying.
        normal = np.array([a[1] - b[1], b[0] - a[0]]) / max(float(np.hypot(*(b - a))), 1e-6)
        bites = np.convolve(rng.normal(0, 0.8, n + 4), np.ones(5) / 2.2, "valid")[:n, None]
        sides.append(a + (b - a) * t + normal * bites + rng.normal(0, 0.4, (n, 2)))
    return (np.concatenate(sides) + [cx, cy]) * SUPERSAMPLE


def _draw_edge(rng, params: PrintDamageParams, sheet: _Print, area: float) -> None:
    height, width = sheet.label.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    alpha = np.zeros((height, width), np.float32)
    if rng.random() < params.edge_chance:
        # Worn edges: a band of ragged width along some sides, with bites out of it.
        mean = rng.uniform(*params.edge_width)
        for distance, along in ((yy, xx), (height - 1 - yy, xx), (xx, yy), (width - 1 - xx, yy)):
            if rng.random() < 0.6:
                n = int(along.max()) + 1
                profile = mean * np.exp(0.5 * _smooth_noise(rng, (1, n), n / 20)[0]
                                        + 0.2 * _smooth_noise(rng, (1, n), 2.5)[0] - 0.2)
                band = np.clip(profile[along.astype(int)] - distance + 0.5, 0, 1)
                alpha = np.maximum(alpha, band)
    if rng.random() < params.corner_chance:
        # A lost corner: torn off along a ragged line, the scanner's lid (white) or the
        # paper showing.
        size = rng.uniform(*params.corner_size) * min(height, width)
        cy, cx = rng.choice([0, height - 1]), rng.choice([0, width - 1])
        a, b = size * rng.uniform(0.5, 1.5), size * rng.uniform(0.5, 1.5)
        rough = _smooth_noise(rng, (height, width), max(size / 8, 1.0)) * 0.15
        field = 1 - (np.abs(yy - cy) / a + np.abs(xx - cx) / b) + rough
        alpha = np.maximum(alpha, np.clip(field * size / 2 + 0.5, 0, 1))
    _paint(sheet, "edge", alpha, (slice(0, height), slice(0, width)), "paper")


def _draw_crease(rng, params: PrintDamageParams, sheet: _Print, area: float) -> None:
    height, width = sheet.label.shape
    for _ in range(_how_many(rng, params.creases, area)):
        heading = rng.uniform(0, 2 * np.pi)
        points = _walk(rng, [rng.uniform(0, width), rng.uniform(0, height)], heading,
                       rng.uniform(*params.crease_length) * max(height, width), 0.02, 0.1)
        across = np.array([-np.sin(heading), np.cos(heading)])
        line_width = rng.uniform(1.0, 2.5)
        # The fold catches the scanner's light on one side and shades the other.
        for side, colour, strength in ((1, "paper", rng.uniform(0.3, 0.8)),
                                       (-1, sheet.paper * 0.15, rng.uniform(0.1, 0.4))):
            shifted = points + side * across * line_width * 0.7
            alpha, box = _lines(_pieces(rng, shifted, line_width, strength, 6,
                                        gaps=rng.uniform(0, 0.2)), height, width)
            _paint(sheet, "crease", alpha, box, colour)


def _draw_dust(rng, params: PrintDamageParams, sheet: _Print, area: float) -> None:
    height, width = sheet.label.shape
    low, high = np.log(params.speck_size)
    for _ in range(_how_many(rng, params.specks, area)):
        size = np.exp(low + (high - low) * rng.random() ** 2)
        shape = _blob(rng, size, 0.4) if size > 3 else _dot(rng, size)
        placed = _place(sheet, shape, rng.uniform(0, height), rng.uniform(0, width))
        if not placed:
            continue
        dark = rng.random() < params.dark_specks
        colour = np.full(3, rng.uniform(0.03, 0.2), np.float32) if dark else "paper"
        _paint(sheet, "dust", placed[0] * rng.uniform(0.5, 1.0), placed[1], colour)


def _dot(rng, size: float) -> np.ndarray:
    """A small speck with sub-pixel coverage (its centre anywhere within a pixel)."""
    outline = np.array([[3.0, 3.0]]) * SUPERSAMPLE + rng.uniform(0, SUPERSAMPLE, 2)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
    radii = size * SUPERSAMPLE / 2 * rng.uniform(0.6, 1.25, 7)
    outline = outline + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
    shape, box = outline_coverage(outline, 0, 7, 7)
    full = np.zeros((7, 7), np.float32)
    full[box] = shape
    return full


def _draw_blotch(rng, params: PrintDamageParams, sheet: _Print, area: float) -> None:
    for _ in range(_how_many(rng, params.blotches, area)):
        size = rng.uniform(*params.blotch_size)
        shape = cv2.GaussianBlur(_blob(rng, size, 0.8), (0, 0), max(size / 15, 0.5))
        # A stain is faint inside and darker at its tide line, where the water dried.
        rim = np.clip(4 * shape * (1 - shape), 0, 1) * rng.uniform(0, 0.6)
        strength = rng.uniform(0.08, 0.35)
        colour = (np.array([0.72, 0.58, 0.34], np.float32) if rng.random() < 0.6
                  else sheet.paper * rng.uniform(1.0, 1.05))
        height, width = sheet.label.shape
        placed = _place(sheet, np.clip(shape * strength + rim * strength, 0, 1),
                        rng.uniform(0, height), rng.uniform(0, width))
        if placed:
            _paint(sheet, "blotch", placed[0], placed[1], np.minimum(colour, 1))


def _draw_foxing(rng, params: PrintDamageParams, sheet: _Print, area: float) -> None:
    if rng.random() >= params.foxing_chance:
        return
    height, width = sheet.label.shape
    for _ in range(max(1, _how_many(rng, (1, 3), area))):
        cy, cx, spread = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(10, 60)
        for _ in range(rng.integers(*params.foxing_spots, endpoint=True)):
            size = np.exp(rng.uniform(np.log(1.5), np.log(9)))
            shape = cv2.GaussianBlur(_blob(rng, size, 0.5), (0, 0), 0.6)
            colour = np.array([0.55, 0.34, 0.18], np.float32) * rng.uniform(0.8, 1.3)
            placed = _place(sheet, shape * rng.uniform(0.35, 0.85),
                            cy + rng.normal(0, spread), cx + rng.normal(0, spread))
            if placed:
                _paint(sheet, "foxing", placed[0], placed[1], np.minimum(colour, 1))


def _draw_hair(rng, params: PrintDamageParams, sheet: _Print, area: float) -> None:
    height, width = sheet.label.shape
    for _ in range(_how_many(rng, params.hairs, area)):
        length = rng.uniform(0.05, 0.25) * max(height, width)
        points = _curve(rng, height, width, length, 0.45)
        alpha, box = _lines([(points, rng.uniform(0.8, 2.0), 1.0)], height, width)
        colour = (np.full(3, rng.uniform(0.02, 0.15), np.float32) if rng.random() < 0.85
                  else "paper")
        _paint(sheet, "hair", alpha * rng.uniform(0.6, 1.0), box, colour)


_DRAW = {"crack": _draw_cracks, "crackle": _draw_crackle, "flake": _draw_flake,
         "edge": _draw_edge, "crease": _draw_crease, "scratch": _draw_scratch,
         "dust": _draw_dust, "blotch": _draw_blotch, "foxing": _draw_foxing,
         "hair": _draw_hair}


def _scan(rng, params: PrintDamageParams, photo: np.ndarray, clean: np.ndarray,
          sheet: _Print) -> Damage:
    """Scan the damaged and the clean print alike (the same blur and noise, then the photo's
    shape and dtype, then JPEG) and mark what the damage visibly moved."""
    sigma = rng.uniform(*params.blur_sigma)
    # A gray print scans neutral (the same noise in every channel): gray stays gray.
    shape = (*clean.shape[:2], 1 if sheet.neutral else 3)
    noise = rng.normal(0, rng.uniform(*params.scan_noise), shape).astype(np.float32)
    scale = 65535.0 if photo.dtype == np.uint16 else 255.0
    outputs = []
    for pixels in (sheet.pixels, clean):
        scanned = np.clip(cv2.GaussianBlur(pixels, (0, 0), sigma) + noise, 0, 1)
        if photo.ndim == 2:
            scanned = scanned @ np.array([0.299, 0.587, 0.114], np.float32)
        outputs.append(scanned)
    change = np.abs(outputs[0] - outputs[1])
    mask = (change.max(axis=2) if change.ndim == 3 else change) >= MIN_CHANGE
    quality = (int(rng.integers(*params.jpeg_quality, endpoint=True))
               if rng.random() < params.jpeg_chance and photo.dtype == np.uint8 else None)
    damaged, reference = (_store(pixels, scale, photo.dtype, quality) for pixels in outputs)
    labels = _spread_labels(sheet.label, mask)
    return Damage(damaged, mask, labels, sheet.coverage, reference)


def _store(pixels: np.ndarray, scale: float, dtype, quality: int | None) -> np.ndarray:
    stored = np.rint(pixels * scale).astype(dtype)
    if quality is None:
        return stored
    bgr = stored[:, :, ::-1] if stored.ndim == 3 else stored
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(bgr),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    return decoded[:, :, ::-1].copy() if decoded.ndim == 3 else decoded
