"""Render the hand annotations of the real development prints into damage masks.

The annotations (annotations.json, one entry per photo stem) were made by reviewing the
prints crop by crop; a mask is built from them in this order:

1. `candidates`: local-contrast filters run on the photo's luminance (gray minus its
   median over `median` px, for `bright` damage, or the median minus gray, for `dark`),
   hysteresis-thresholded at `low`/`high` levels, components shorter than `min_length` px
   dropped; optionally limited to `region` polygons.
2. `erase`: polygons of picture (faces, fabric, lettering, buttons) where the candidates
   fired on the photo's own detail; candidates there are dropped.
3. `corridors`: polylines (with a `width`) along damage seen crossing an erased area; the
   `corridor_candidate` filter is kept inside them, so the crack's own pixels are marked
   rather than the hand-drawn line.
4. `strokes`: polylines drawn as they are (damage the filters miss).
5. `fill`: polygons painted whole (lost corners, chips).
6. `remove`: polygons cleared at the end (false candidates found on review).

Points are [x, y] in photo pixels. White (255) in a mask is damage.

    python benchmarks/real/render_masks.py --photos /path/to/old_w_scratch
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from skimage.filters import apply_hysteresis_threshold

from pipeline.masks import encode_mask
from pipeline.storage import write_uri

HERE = Path(__file__).resolve().parent
ANNOTATIONS = HERE / "annotations.json"
MASKS = HERE / "masks"


def luminance(photo: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(photo[:, :, :3], cv2.COLOR_BGR2GRAY).astype(np.float32)


def candidate(gray: np.ndarray, spec: dict) -> np.ndarray:
    """Pixels brighter (or darker) than their neighbourhood's median by `low`..`high` levels."""
    smooth = cv2.GaussianBlur(gray, (3, 3), 0.6)
    levels = np.clip(gray, 0, 255).astype(np.uint8)
    median = cv2.medianBlur(levels, spec["median"]).astype(np.float32)
    contrast = median - smooth if spec["kind"] == "dark" else smooth - median
    mask = apply_hysteresis_threshold(contrast, spec["low"], spec["high"])
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8),
                                                           connectivity=8)
    keep = np.maximum(stats[:, 2], stats[:, 3]) >= spec.get("min_length", 0)
    keep[0] = False
    return keep[labels]


def polygons(shape: tuple[int, int], polys: list) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    for poly in polys:
        cv2.fillPoly(canvas, [np.round(np.array(poly, np.float64)).astype(np.int32)], 1)
    return canvas > 0


def lines(shape: tuple[int, int], strokes: list) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    for stroke in strokes:
        points = np.round(np.array(stroke["points"], np.float64)).astype(np.int32)
        cv2.polylines(canvas, [points], False, 1, thickness=int(stroke["width"]),
                      lineType=cv2.LINE_8)
    return canvas > 0


def render(photo: np.ndarray, note: dict) -> np.ndarray:
    """The damage mask (HxW bool) of one photo from its annotation entry."""
    gray = luminance(photo)
    shape = gray.shape
    mask = np.zeros(shape, bool)
    for spec in note.get("candidates", []):
        found = candidate(gray, spec)
        if spec.get("region"):
            found &= polygons(shape, spec["region"])
        mask |= found
    mask &= ~polygons(shape, note.get("erase", []))
    if note.get("corridors"):
        mask |= candidate(gray, note["corridor_candidate"]) & lines(shape, note["corridors"])
    mask |= lines(shape, note.get("strokes", []))
    mask |= polygons(shape, note.get("fill", []))
    mask &= ~polygons(shape, note.get("remove", []))
    return mask


def read_photo(path: Path) -> np.ndarray:
    photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if photo is None:
        raise SystemExit(f"cannot read {path} as an image")
    return photo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="folder holding a.png .. d.png")
    parser.add_argument("--out", type=Path, default=MASKS)
    args = parser.parse_args()
    notes = json.loads(ANNOTATIONS.read_text())
    for stem, note in notes.items():
        photo = read_photo(args.photos / f"{stem}.png")
        mask = render(photo, note)
        write_uri(str(args.out / f"{stem}.png"), encode_mask(mask))
        print(f"{stem}: {mask.mean():.2%} damage")


if __name__ == "__main__":
    main()
