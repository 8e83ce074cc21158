"""Masks: read them by the project's convention, and draw seeded synthetic ones.

Convention: after conversion to 8-bit gray, pixels > 127 are holes to fill (white =
fill, as OpenCV and IOPaint do); `invert` flips it. Synthetic masks (`scratch`,
`strokes`, `blob`) serve the examples, the benchmarks and the tests.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from pipeline.imageio import ImageDecodeError, open_checked

MASK_KINDS = ("scratch", "strokes", "blob")


class MaskError(ValueError):
    """The mask cannot be used for its photo; the message says why, for the manifest."""


def decode_mask(
    data: bytes,
    shape: tuple[int, int],
    invert: bool = False,
    resize: bool = False,
    max_pixels: int = 180_000_000,
) -> np.ndarray:
    """Mask bytes to a bool HxW array for a photo of `shape` (True = fill)."""
    try:
        image = open_checked(data, max_pixels)
        image = ImageOps.exif_transpose(image)
        gray = _to_gray8(image)
    except ImageDecodeError as error:
        raise MaskError(f"mask: {error}") from None
    except Exception as error:
        raise MaskError(f"mask cannot be decoded: {error}") from None
    height, width = shape
    if gray.shape != (height, width):
        if not resize:
            raise MaskError(
                f"mask is {gray.shape[1]}x{gray.shape[0]} but the image is {width}x{height} "
                "(pass --resize-masks to resize masks with nearest-neighbour)"
            )
        gray = cv2.resize(gray, (width, height), interpolation=cv2.INTER_NEAREST)
    holes = gray > 127
    return ~holes if invert else holes


def _to_gray8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return (np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"))


def hole_fraction(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else 0.0


def encode_mask(mask: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """A bool mask as an 8-bit PNG, white = fill, with optional PNG text chunks."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def synthetic_mask(kind: str, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Seeded damage masks of the benchmark's three kinds.

    scratch: thin curved lines 1-4 px wide covering about 5% of the image.
    strokes: free-form brush strokes 12-36 px wide, about 10%.
    blob: one irregular region of 15-30%.
    """
    rng = np.random.default_rng(seed)
    if kind == "scratch":
        return _curves(rng, height, width, widths=(1, 4), target=0.05)
    if kind == "strokes":
        return _curves(rng, height, width, widths=(12, 36), target=0.10)
    if kind == "blob":
        return _blob(rng, height, width, target=rng.uniform(0.15, 0.30))
    raise ValueError(f"unknown mask kind {kind!r}; choose from {', '.join(MASK_KINDS)}")


def _curves(rng, height: int, width: int, widths: tuple[int, int], target: float) -> np.ndarray:
    canvas = np.zeros((height, width), np.uint8)
    scale = max(height, width)
    while canvas.mean() / 255 < target:
        points = [(rng.uniform(0, width), rng.uniform(0, height))]
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(4, 9))):
            angle += rng.normal(0, 0.35)
            step = rng.uniform(0.04, 0.12) * scale
            x, y = points[-1]
            points.append((x + step * np.cos(angle), y + step * np.sin(angle)))
        thickness = int(rng.integers(widths[0], widths[1] + 1))
        curve = np.round(np.array(points)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [curve], False, 255, thickness, lineType=cv2.LINE_8)
    return canvas > 0


def _blob(rng, height: int, width: int, target: float) -> np.ndarray:
    center = np.array([width, height]) * rng.uniform(0.35, 0.65, size=2)
    radius = np.sqrt(target * height * width / np.pi)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    wobble = 1 + 0.25 * np.sin(angles * rng.integers(2, 5) + rng.uniform(0, 2 * np.pi))
    wobble *= rng.uniform(0.85, 1.15, size=angles.size)
    points = center + np.stack([np.cos(angles), np.sin(angles)], 1) * (radius * wobble)[:, None]
    canvas = np.zeros((height, width), np.uint8)
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 255)
    return canvas > 0
