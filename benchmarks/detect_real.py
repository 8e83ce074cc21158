"""Benchmark the shipped detector on real damaged prints against hand-made masks.

The real development set is the four photos of `test_images/old_w_scratch/` of
microsoft/Bringing-Old-Photos-Back-to-Life (a.png .. d.png). Their licence is unclear, so
they are not in this repository: bring them to a local folder and pass it as `--photos`.
The masks are ours (benchmarks/real/masks, made as benchmarks/real/README.md says).

For each photo and sensitivity: the detector's pixel precision / recall / F1 against the
mask with a 2-px tolerance, the share of the photo flagged and marked, and detection seconds
per megapixel (torch and OpenCV on one thread); pooled figures count every photo's pixels
together. A figure per photo (photo | found mask over it | true mask over it | restored
with the found mask, as `inpaint run --masks auto` fills) goes to `--figures`, which must
lie outside the repository: the figures show the photos. Under each table: where the
missed marked pixels lie (`missed_by_kind`: the frame zone, thin lines, specks, wide areas).

    python benchmarks/detect_real.py --photos /path/to/old_w_scratch [--sensitivity 0.5 0.9]

`--sweep S ...` adds one compact table per detector of `--sweep-detectors` (default `auto`):
its precision / recall per photo and pooled at each sensitivity S (scores only, no figures),
for `auto` the other half of what
`detect_clean_real.py --sweep` measures on undamaged real photos.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import tempfile
import time
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import torch
from detect import FILL, fill
from pydantic import TypeAdapter, ValidationError

from pipeline import imageio
from pipeline.damage import mask_scores
from pipeline.detect import DEFAULT_DETECTOR, auto_detector, detect, detector_names
from pipeline.detectors import verified
from pipeline.settings import RunSettings
from pipeline.storage import write_uri

ROOT = Path(__file__).resolve().parent.parent
MASKS = ROOT / "benchmarks" / "real" / "masks"
OUT = ROOT / "benchmarks" / "results" / "detect-real.md"
FIGURES = Path(tempfile.gettempdir()) / "detect-real-figures"
# The committed masks fit these files only (sha256 of the PNGs as that repository has them).
PHOTO_SHA256 = {
    "a": "e3bcb96561e256b9510adf444915b84e2ad9d8a8ed186fa4f2cdf61a95d5f20a",
    "b": "b6a11ecffc1387a9649cb50b1ab35ea045ad02e4cc4f417275e0ee51921aca01",
    "c": "407ea9605db5672eb6bcab8203345680a1c0d80da3f2a8e2e99322f4e92e82ba",
    "d": "27cec4dc7567c3da29c6e061319d6c8c18f200e888d16298ddd5fec3ac023f7d",
}
TOLERANCE = 2
MAX_PIXELS = 200_000_000


def find_photo(folder: Path, stem: str) -> Path:
    matches = sorted(p for p in folder.glob(f"{stem}.*") if p.is_file())
    if not matches:
        raise SystemExit(f"no photo named {stem}.* in {folder} (the mask {stem}.png needs it)")
    return matches[0]


def check_same_photo(path: Path, data: bytes, masks: Path) -> None:
    """The committed masks were drawn on particular files: refuse any other file."""
    expected = PHOTO_SHA256.get(path.stem) if masks.resolve() == MASKS.resolve() else None
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise SystemExit(f"{path} is not the photo the mask was drawn on (sha256 differs from "
                         "benchmarks/real/README.md)")


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise SystemExit(f"cannot read the mask {path}")
    if mask.shape != shape:
        raise SystemExit(f"the mask {path} is {mask.shape[1]}x{mask.shape[0]}, "
                         f"its photo {shape[1]}x{shape[0]}")
    return mask > 127


def overlaid(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    shown = rgb.copy()
    shown[mask] = (0.35 * shown[mask] + 0.65 * np.array(colour)).astype(np.uint8)
    return shown


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    """HxWx3 of a gray, RGB or RGBA photo (alpha dropped)."""
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(pixels[:, :, :3])


def figure(pixels: np.ndarray, found: np.ndarray, true: np.ndarray, restored: np.ndarray,
           path: Path) -> None:
    """photo | found mask (red) | true mask (green) | restored, side by side, as BGR PNG."""
    rgb, out = as_rgb(pixels), as_rgb(restored)
    gap = np.full((rgb.shape[0], 6, 3), 255, np.uint8)
    row = np.hstack([rgb, gap, overlaid(rgb, found, (255, 0, 0)), gap,
                     overlaid(rgb, true, (0, 200, 0)), gap, out])
    write_uri(str(path), cv2.imencode(".png", cv2.cvtColor(row, cv2.COLOR_RGB2BGR))[1].tobytes())


def measure(pixels: np.ndarray, true: np.ndarray, detector: str, sensitivity: float,
            scale: float, edge_wear: bool = False) -> tuple[dict[str, float], np.ndarray]:
    started = time.process_time()
    found = detect(pixels, detector, sensitivity, scale=scale, edge_wear=edge_wear).mask
    seconds = time.process_time() - started
    scores = mask_scores(found, true, TOLERANCE)
    return scores | {"flagged": float(found.mean()), "marked": float(true.mean()),
                     "found_pixels": float(found.sum()), "true_pixels": float(true.sum()),
                     "seconds": seconds, "megapixels": true.size / 1e6}, found


# Where missed damage lies (`missed_by_kind`): a marked mark under SPECK_AREA px is a speck;
# a missed pixel whose mark is more than WIDE px across near it lies in a wide area; the rest
# are thin lines (cracks, scratches, creases). The frame zone is `--detect-edge-wear`'s.
MISSED_KINDS = ("frame zone", "thin lines", "specks", "wide areas")
SPECK_AREA = 40
WIDE = 7


def missed_by_kind(found: np.ndarray, true: np.ndarray) -> dict[str, int]:
    """The marked pixels no flagged one lies within the tolerance of, counted by where they
    lie (MISSED_KINDS; the frame zone first, whatever their shape)."""
    kernel = np.ones((2 * TOLERANCE + 1,) * 2, np.uint8)
    missed = true & ~(cv2.dilate(found.astype(np.uint8), kernel) > 0)
    frame = verified.near_frame(true.shape)
    distance = cv2.distanceTransform(true.astype(np.uint8), cv2.DIST_L2, 3)
    width = 2 * cv2.dilate(distance, np.ones((9, 9), np.uint8))  # the mark's width nearby
    _, labels, stats, _ = cv2.connectedComponentsWithStats(true.astype(np.uint8), connectivity=8)
    small = stats[labels, cv2.CC_STAT_AREA] < SPECK_AREA
    inside = missed & ~frame
    return {"frame zone": int((missed & frame).sum()),
            "thin lines": int((inside & (width <= WIDE) & ~small).sum()),
            "specks": int((inside & (width <= WIDE) & small).sum()),
            "wide areas": int((inside & (width > WIDE)).sum())}


def missed_line(counts: list[dict[str, int]]) -> str:
    total = {kind: sum(count[kind] for count in counts) for kind in MISSED_KINDS}
    missed = sum(total.values())
    shares = ", ".join(f"{kind} {total[kind] / max(missed, 1):.0%}" for kind in MISSED_KINDS)
    return (f"Missed, pooled: {missed} marked pixels (not within {TOLERANCE} px of a flagged "
            f"one), by where they lie: {shares}.")


def pooled(rows: list[dict[str, float]]) -> dict[str, float]:
    """All photos' pixels together: precision weighted by flagged pixels, recall by marked."""
    found = sum(r["found_pixels"] for r in rows)
    true = sum(r["true_pixels"] for r in rows)
    size = sum(r["megapixels"] for r in rows)
    precision = sum(r["precision"] * r["found_pixels"] for r in rows) / max(found, 1)
    recall = sum(r["recall"] * r["true_pixels"] for r in rows) / max(true, 1)
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / max(precision + recall, 1e-9),
            "flagged": found / (size * 1e6), "marked": true / (size * 1e6),
            "seconds": sum(r["seconds"] for r in rows), "megapixels": size}


def table_row(label: str, row: dict[str, float]) -> str:
    return (f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | "
            f"{row['flagged']:.2%} | {row['marked']:.2%} | "
            f"{row['seconds'] / row['megapixels']:.2f} |")


def sensitivity_level(text: str) -> float:
    """A `--sweep` value, refused at once (not after the main tables) where the tool's own
    settings would refuse it."""
    level = float(text)
    field = RunSettings.model_fields["sensitivity"]
    try:
        TypeAdapter(Annotated[(float, *field.metadata)]).validate_python(level)
    except ValidationError as error:
        raise argparse.ArgumentTypeError(
            f"{text} is not a sensitivity: {error.errors()[0]['msg']}") from error
    return level


def add_sweep_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--sweep", type=sensitivity_level, nargs="*", default=[],
                        help=f"Sensitivities for a table of {what}.")


def sweep_option(sensitivities: list[float]) -> str:
    return f" --sweep {' '.join(map(str, sensitivities))}" if sensitivities else ""


def sweep_detectors_option(detectors: list[str]) -> str:
    return "" if detectors == [DEFAULT_DETECTOR] else f" --sweep-detectors {' '.join(detectors)}"


def sweep_columns(photos: dict[str, tuple[np.ndarray, np.ndarray]], sensitivities: list[float],
                  scale: float, detector: str,
                  edge_wear: bool = False) -> dict[float, list[dict[str, float]]]:
    """`detector`'s scores on each photo, one list per sensitivity."""
    return {level: [measure(pixels, true, detector, level, scale, edge_wear)[0]
                    for pixels, true in photos.values()] for level in sensitivities}


def sweep_table(stems: list[str], columns: dict[float, list[dict[str, float]]],
                detector: str) -> list[str]:
    """Precision / recall on each photo and pooled, one column per sensitivity."""
    lines = [f"## `{detector}` by sensitivity (precision / recall)", "",
             "| photo | " + " | ".join(str(level) for level in columns) + " |",
             "|---|" + "---|" * len(columns)]
    labels = [*stems, "**pooled**"]
    for index, label in enumerate(labels):
        cells = [rows[index] if index < len(stems) else pooled(rows)
                 for rows in columns.values()]
        lines.append(f"| {label} | "
                     + " | ".join(f"{c['precision']:.2f} / {c['recall']:.2f}" for c in cells)
                     + " |")
    return lines


def split_half_table(stems: list[str], columns: dict[float, list[dict[str, float]]],
                     detector: str) -> list[str]:
    """Pick the sensitivity on half the photos (best pooled F1), score it on the other half:
    an operating point is only worth what it does on photos it was not picked on."""
    if len(stems) < 2:
        return []
    default = RunSettings.model_fields["sensitivity"].default
    lines = [f"## `{detector}`: sensitivity picked on half the photos, scored on the other half",
             "", f"Picked from the sweep's levels by pooled F1 on the tuning half; held out: "
             f"pooled precision / recall / F1 of the other half at the picked level and at the "
             f"default ({default}).", "",
             "| tuned on | picked | held out | at picked | at default |", "|---|---|---|---|---|"]
    half = len(stems) // 2
    for tuned in itertools.combinations(range(len(stems)), half):
        held = [i for i in range(len(stems)) if i not in tuned]
        if len(stems) == 2 * half and held < list(tuned):
            continue  # with an even count each split comes up twice; its mirror is listed
        for tune_on, score_on in ((tuned, held), (held, tuned)):
            picked = max(columns, key=lambda level: pooled(
                [columns[level][i] for i in tune_on])["f1"])
            cells = []
            for level in (picked, default):
                scores = ([columns[level][i] for i in score_on] if level in columns else
                          None)
                cells.append("not swept" if scores is None else
                             "{precision:.2f} / {recall:.2f} / {f1:.2f}".format(**pooled(scores)))
            lines.append(f"| {', '.join(stems[i] for i in tune_on)} | {picked} | "
                         f"{', '.join(stems[i] for i in score_on)} | {cells[0]} | {cells[1]} |")
    return lines


def outside_repo(folder: Path) -> Path:
    resolved = folder.resolve()
    if resolved == ROOT or ROOT in resolved.parents:
        raise SystemExit(f"--figures {folder} is inside the repository; the figures show "
                         "photos whose licence is unclear, so write them elsewhere")
    return resolved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True,
                        help="Local folder of the photos (a.png .. d.png).")
    parser.add_argument("--masks", type=Path, default=MASKS,
                        help="Folder of the true masks, one <photo stem>.png each.")
    parser.add_argument("--detectors", nargs="+", default=[DEFAULT_DETECTOR],
                        help="Detectors to score (auto: what `--masks auto` runs).")
    parser.add_argument("--sensitivity", type=float, nargs="+", default=[0.5, 0.9])
    parser.add_argument("--detect-scale", type=float, default=1.0,
                        help="Detect on the photo shrunk by this factor (`--detect-scale`).")
    parser.add_argument("--figures", type=Path, default=FIGURES,
                        help="Local folder for the figures (never inside the repository).")
    parser.add_argument("--no-figures", dest="figures_too", action="store_false",
                        help="Score only (the figures' fills take most of the time).")
    add_sweep_option(parser, "each --sweep-detectors' precision / recall")
    parser.add_argument("--sweep-detectors", nargs="+", default=[DEFAULT_DETECTOR],
                        choices=detector_names(), help="Detectors to sweep (default: auto).")
    parser.add_argument("--detect-edge-wear", action="store_true",
                        help="Flag fainter damage near the frame (`--detect-edge-wear`).")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    wear = " --detect-edge-wear" if args.detect_edge_wear else ""
    if args.sweep_detectors != [DEFAULT_DETECTOR] and not args.sweep:
        parser.error("--sweep-detectors needs --sweep S ...")
    figures = outside_repo(args.figures)
    stems = sorted(p.stem for p in args.masks.glob("*.png"))
    if not stems:
        raise SystemExit(f"no masks (*.png) in {args.masks}")
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    lines = ["# Detection on real damaged prints", "",
             f"Photos: `test_images/old_w_scratch/` of microsoft/Bringing-Old-Photos-Back-to-Life "
             f"({', '.join(stems)}; not in this repository); true masks: hand annotations in "
             "`benchmarks/real/masks` (see benchmarks/real/README.md). Detectors: "
             f"{', '.join(f'`{name}`' for name in args.detectors)} (auto: what `--masks auto` "
             "runs, picked per photo, as below), `--detect-scale "
             f"{args.detect_scale}`{wear and ', `--detect-edge-wear`'}. "
             f"Pixel scores with a {TOLERANCE}-px tolerance; pooled: all photos' pixels "
             "together. flagged: share of the photo the detector marks; marked: share the "
             "annotation marks. s/MP: detection only, CPU seconds of the process with torch and "
             "OpenCV on one thread (the wall clock on a 2-core machine shared with other jobs "
             "says more about the others). Command: `python benchmarks/detect_real.py "
             f"--photos DIR --detectors {' '.join(args.detectors)} "
             f"--sensitivity {' '.join(map(str, args.sensitivity))}"
             f"{'' if args.detect_scale == 1 else f' --detect-scale {args.detect_scale}'}"
             f"{sweep_option(args.sweep)}"
             f"{sweep_detectors_option(args.sweep_detectors) if args.sweep else ''}{wear}`.",
             ""]
    photos = {}
    for stem in stems:
        path = find_photo(args.photos, stem)
        data = path.read_bytes()
        check_same_photo(path, data, args.masks)
        pixels = imageio.decode(data, MAX_PIXELS).pixels
        photos[stem] = (pixels, read_mask(args.masks / f"{stem}.png", pixels.shape[:2]))
    picks = ", ".join(f"{stem} `{auto_detector(pixels, None)}`"
                      for stem, (pixels, _) in photos.items())
    lines += [f"What `auto` runs on each photo: {picks}.", ""]
    for detector, sensitivity in itertools.product(args.detectors, args.sensitivity):
        # Load the net before the clock starts: s/MP is the per-photo cost, not start-up.
        detect(next(iter(photos.values()))[0], detector, sensitivity, scale=args.detect_scale,
               edge_wear=args.detect_edge_wear)
        rows, missed = [], []
        lines += [f"## {detector}, sensitivity {sensitivity}", "",
                  "| photo | precision | recall | f1 | flagged | marked | s/MP |",
                  "|---|---|---|---|---|---|---|"]
        for stem, (pixels, true) in photos.items():
            row, found = measure(pixels, true, detector, sensitivity, args.detect_scale,
                                 args.detect_edge_wear)
            rows.append(row)
            missed.append(missed_by_kind(found, true))
            lines.append(table_row(stem, row))
            print(detector, table_row(stem, row), flush=True)
            if args.figures_too:
                restored = fill(pixels, found)
                figure(pixels, found, true, restored,
                       figures / f"{stem}-{detector}-sensitivity{sensitivity}.png")
        lines += [table_row("**pooled**", pooled(rows)), "", missed_line(missed), ""]
    lines.append(f"Restored panels of the figures: `{FILL}` with the found mask.")
    for detector in args.sweep_detectors if args.sweep else []:
        columns = sweep_columns(photos, args.sweep, args.detect_scale, detector,
                                args.detect_edge_wear)
        lines += [""] + sweep_table(stems, columns, detector)
        lines += [""] + split_half_table(stems, columns, detector)
    write_uri(str(args.out), ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    print(f"figures in {figures}")


if __name__ == "__main__":
    main()
