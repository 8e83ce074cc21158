"""Compare `pipeline.damage.add_print_damage` with the real damaged prints of the development set.

For the four real prints (`benchmarks/real/`, photos in a local folder, since their licence is
unclear) and their hand-made masks, and for synthetic prints made from photos that ship with
the dependencies at a similar size, the same statistics of the damage: the share of the photo
it covers, its connected components (count per 0.25 MP, area, skeleton length, width), its
contrast against the local median of the luminance (21 px, in levels of 255) and the share of
damage pixels lighter than that median. Prints the table as Markdown (for
benchmarks/results/damage.md: numbers only, no pixels) and writes a side-by-side figure of
real and synthetic crops at the same scale to `--figure` (outside the repository: it shows
the real photos).

    python benchmarks/damage_compare.py --photos /path/to/old_w_scratch [--figure FILE]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
from photos import load_photo
from skimage.morphology import skeletonize

from pipeline.damage import PRINT_KINDS, add_print_damage

ROOT = Path(__file__).resolve().parent.parent
MASKS = ROOT / "benchmarks" / "real" / "masks"
REAL = ("a", "b", "c", "d")
# Faces, a uniform, an animal, objects, a landscape: the kinds of pictures old prints show.
SYNTHETIC = ("astronaut", "grace_hopper", "camera", "chelsea", "coffee", "china")
SEEDS = tuple(range(10))
# The real prints are 256-624 px on the long side.
LONG_SIDES = (256, 400, 624)
CROP, ZOOM = 96, 3


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def damage_stats(rgb: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-photo figures and per-component / per-pixel samples of the damage in `mask`."""
    grey = luminance(rgb)
    median = cv2.medianBlur(np.clip(grey, 0, 255).astype(np.uint8), 21).astype(np.float32)
    contrast = (grey - median)[mask]
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    areas = np.bincount(labels.ravel(), minlength=count)[1:]
    skeleton = skeletonize(mask)
    lengths = np.bincount(labels[skeleton], minlength=count)[1:]
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    widths = 2 * distance[skeleton]
    return {"share": float(mask.mean()), "per_mp": (count - 1) / (mask.size / 250_000),
            "areas": areas, "lengths": lengths[lengths > 0], "widths": widths,
            "contrast": contrast}


def bright(rgb: np.ndarray) -> np.ndarray:
    """Pixels 5+ levels above their 7-px median luminance: the annotation's candidates."""
    grey = np.clip(luminance(rgb), 0, 255).astype(np.uint8)
    return grey.astype(np.int16) - cv2.medianBlur(grey, 7) >= 5


def pooled(stats: list[dict]) -> dict[str, float]:
    """One row of the table: per-photo figures averaged, samples pooled over the photos."""
    joined = {key: np.concatenate([s[key] for s in stats])
              for key in ("areas", "lengths", "widths", "contrast")}
    return {
        "share %": 100 * float(np.mean([s["share"] for s in stats])),
        "components / 0.25 MP": float(np.mean([s["per_mp"] for s in stats])),
        "area median": float(np.median(joined["areas"])),
        "area p90": float(np.percentile(joined["areas"], 90)),
        "length median": float(np.median(joined["lengths"])),
        "length p90": float(np.percentile(joined["lengths"], 90)),
        "width mean": float(np.mean(joined["widths"])),
        "width p90": float(np.percentile(joined["widths"], 90)),
        "contrast median": float(np.median(joined["contrast"])),
        "|contrast| median": float(np.median(np.abs(joined["contrast"]))),
        "lighter %": 100 * float((joined["contrast"] > 0).mean()),
    }


def real_prints(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    prints = {}
    for stem in REAL:
        rgb = cv2.imread(str(folder / f"{stem}.png"), cv2.IMREAD_COLOR)
        if rgb is None:
            raise SystemExit(f"cannot read {folder / f'{stem}.png'}: pass --photos the folder "
                             "holding a.png .. d.png")
        mask = cv2.imread(str(MASKS / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) > 0
        prints[stem] = (rgb[:, :, ::-1].copy(), mask)
    return prints


def synthetic_prints() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    made = []
    for index, name in enumerate(SYNTHETIC):
        photo = load_photo(name)
        for seed in SEEDS:
            side = LONG_SIDES[(index + seed) % len(LONG_SIDES)]
            factor = side / max(photo.shape[:2])
            small = cv2.resize(photo, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            damage = add_print_damage(small, seed=seed)
            made.append((f"{name}/{seed}", damage.image, damage.mask, damage.kinds))
    return made


def densest_crops(rgb: np.ndarray, mask: np.ndarray, count: int) -> list[np.ndarray]:
    """The `count` CROP-px crops (on a half-crop grid) that hold the most damage."""
    scored = []
    for top in range(0, max(rgb.shape[0] - CROP, 0) + 1, CROP // 2):
        for left in range(0, max(rgb.shape[1] - CROP, 0) + 1, CROP // 2):
            scored.append((mask[top:top + CROP, left:left + CROP].mean(), top, left))
    scored.sort(reverse=True)
    chosen = []
    for _, top, left in scored:
        if all(abs(top - t) >= CROP or abs(left - u) >= CROP for t, u in chosen):
            chosen.append((top, left))
        if len(chosen) == count:
            break
    return [rgb[t:t + CROP, u:u + CROP] for t, u in chosen]


def figure(real: dict, synthetic: list, path: Path) -> None:
    """Rows of real crops above rows of synthetic ones, each shown ZOOM times, nearest."""
    tiles_real = [c for rgb, mask in real.values() for c in densest_crops(rgb, mask, 3)]
    tiles_synthetic = [c for _, rgb, mask, _ in synthetic[::3] for c in densest_crops(rgb, mask, 1)]
    per_row = 6

    def rows(tiles):
        tiles = [cv2.resize(t, (CROP * ZOOM, CROP * ZOOM), interpolation=cv2.INTER_NEAREST)
                 for t in tiles]
        tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % per_row)
        return [np.hstack(tiles[i:i + per_row]) for i in range(0, len(tiles), per_row)]

    gap = np.full((12, per_row * CROP * ZOOM, 3), (255, 0, 0), np.uint8)
    sheet = np.vstack(rows(tiles_real) + [gap] + rows(tiles_synthetic))
    cv2.imwrite(str(path), sheet[:, :, ::-1])


def per_kind(synthetic: list) -> str:
    """Per kind of synthetic damage: its share of the photos, its contrast and how much of it
    is lighter than the local median."""
    lines = ["| kind | share of photo % | contrast median | lighter % |", "|---|---|---|---|"]
    samples = {kind: [] for kind in PRINT_KINDS}
    pixels = 0
    for _, rgb, mask, kinds in synthetic:
        grey = luminance(rgb)
        median = cv2.medianBlur(np.clip(grey, 0, 255).astype(np.uint8), 21)
        contrast = grey - median
        pixels += mask.size
        for kind, value in PRINT_KINDS.items():
            samples[kind].append(contrast[mask & (kinds == value)])
    for kind, parts in samples.items():
        values = np.concatenate(parts)
        if values.size:
            lines.append(f"| {kind} | {100 * values.size / pixels:.2f} | "
                         f"{np.median(values):.1f} | {100 * (values > 0).mean():.0f} |")
    return "\n".join(lines)


def table(rows: dict[str, dict[str, float]]) -> str:
    names = list(next(iter(rows.values())))
    lines = ["| | " + " | ".join(rows) + " |", "|---" * (len(rows) + 1) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{r[name]:.3g}" for r in rows.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, required=True,
                        help="folder with the real prints a.png .. d.png")
    parser.add_argument("--figure", type=Path,
                        default=Path(tempfile.gettempdir()) / "damage-compare.png")
    args = parser.parse_args()
    if args.figure.resolve().is_relative_to(ROOT):
        raise SystemExit("--figure must lie outside the repository: it shows the real photos")
    real = real_prints(args.photos)
    synthetic = synthetic_prints()
    rows = {f"real {stem}": pooled([damage_stats(*real[stem])]) for stem in REAL}
    rows["real, all four"] = pooled([damage_stats(*real[stem]) for stem in REAL])
    rows[f"synthetic ({len(synthetic)})"] = pooled([damage_stats(rgb, mask)
                                                    for _, rgb, mask, _ in synthetic])
    # The real masks were found by a bright-candidate filter (luminance over its 7-px median
    # by 5+ levels, benchmarks/real/README.md) with dark specks added by hand; the synthetic
    # mask is every pixel the damage moved by 8 levels. This row keeps only the part of the
    # synthetic mask that filter would offer, to tell the two definitions apart.
    rows["synthetic, bright-filtered"] = pooled([damage_stats(rgb, mask & bright(rgb))
                                                 for _, rgb, mask, _ in synthetic])
    print(table(rows))
    print("\n" + per_kind(synthetic))
    figure(real, synthetic, args.figure)
    print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
