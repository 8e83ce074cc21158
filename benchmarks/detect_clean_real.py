"""What the detectors flag on real photos with little or no damage, and which one `auto` runs.

Real photos nobody tuned on, most of them scans of old prints with little visible damage
(portraits, gray and colour): whatever a detector flags there is mostly picture taken for
damage. There are no true masks: the table gives the share flagged, the figures (photo |
`learned` | `verified` | `combined`, flagged pixels red) show what it is. The photos'
licence is unclear, so they are not in this repository and the figures go to a folder
outside it. The set used for benchmarks/results/detect-clean-real.md: `inputs/whole_imgs/`
and `inputs/gray_faces/` of sczhou/CodeFormer (commit in the results file) and
`inputs/whole_imgs/00.jpg`, `10045.png` of TencentARC/GFPGAN, each file named
`<repo>-<its name>`:

    python benchmarks/detect_clean_real.py --photos DIR [--sensitivity 0.5]

`--sweep S ...` adds one table: the share of each photo `auto` flags at each sensitivity S,
the photos it gives `verified` (the prints) first: what a higher sensitivity costs on real
photos nobody tuned on (`detect_real.py --sweep` gives what it finds on real damage).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from detect_real import (
    MAX_PIXELS,
    add_sweep_option,
    as_rgb,
    outside_repo,
    overlaid,
    sweep_option,
)

from pipeline import imageio
from pipeline.detect import auto_detector, detect
from pipeline.detectors.monochrome import hue_facts
from pipeline.storage import write_uri

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "detect-clean-real.md"
FIGURES = Path(tempfile.gettempdir()) / "detect-clean-real-figures"
DETECTORS = ("learned", "verified", "combined")
FIGURE_SIDE = 360


def as_8bit(pixels: np.ndarray) -> np.ndarray:
    return (pixels // 257).astype(np.uint8) if pixels.dtype == np.uint16 else pixels


def figure(pixels: np.ndarray, masks: list[np.ndarray], path: Path) -> None:
    """photo | each detector's mask over it (red, grown by a pixel to be seen), shrunk."""
    shown = as_rgb(as_8bit(pixels))
    scale = min(1.0, FIGURE_SIDE / max(shown.shape[:2]))
    panels = [shown] + [overlaid(shown, cv2.dilate(mask.astype(np.uint8), np.ones((3, 3))) > 0,
                                 (255, 0, 0)) for mask in masks]
    panels = [cv2.resize(panel, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
              for panel in panels]
    gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
    row = np.hstack([part for panel in panels for part in (panel, gap)][:-1])
    write_uri(str(path), cv2.imencode(".png", cv2.cvtColor(row, cv2.COLOR_RGB2BGR))[1].tobytes())


def sweep_row(name: str, pixels: np.ndarray, sensitivities: list[float],
              edge_wear: bool = False) -> tuple:
    """What `auto` runs on the photo and the share it flags at each sensitivity (with
    `edge_wear`, `--detect-edge-wear`), sorting the photos it gives `verified` (the prints)
    first."""
    flagged = [detect(pixels, "auto", level, edge_wear=edge_wear) for level in sensitivities]
    return (flagged[0].detector != "verified", name, flagged[0].detector,
            [found.mask.mean() for found in flagged])


def sweep_table(rows: list[tuple], sensitivities: list[float]) -> list[str]:
    """The `sweep_row`s as a table, one column per sensitivity; prints first."""
    lines = ["## What `auto` flags by sensitivity", "",
             "| photo | auto runs | " + " | ".join(str(s) for s in sensitivities) + " |",
             "|---|---|" + "---|" * len(sensitivities)]
    for _, name, detector, shares in sorted(rows):
        lines.append(f"| {name} | `{detector}` | "
                     + " | ".join(f"{share:.2%}" for share in shares) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--sensitivity", type=float, default=0.5)
    parser.add_argument("--source", default="", help="Where the photos came from, for the "
                        "results file (repositories and commits).")
    parser.add_argument("--figures", type=Path, default=FIGURES)
    add_sweep_option(parser, "the share auto flags")
    parser.add_argument("--detect-edge-wear", action="store_true",
                        help="The sweep's `auto` with `--detect-edge-wear`.")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.detect_edge_wear and not args.sweep:
        parser.error("--detect-edge-wear is for the sweep: give --sweep S ...")
    figures = outside_repo(args.figures)
    paths = sorted(p for p in args.photos.iterdir() if p.is_file())
    if not paths:
        raise SystemExit(f"no photos in {args.photos}")
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    # Load the nets before any clock starts, on the first photo: a first call costs seconds
    # more than the next (loading, and torch's first passes at a new size).
    first = imageio.decode(paths[0].read_bytes(), MAX_PIXELS).pixels
    for detector in DETECTORS:
        detect(first, detector)
    lines = ["# What the detectors flag on real photos with little damage", "",
             f"Photos: {args.source or args.photos.name} (not in this repository). No true "
             "masks: flagged is the share of the photo a detector marks, mostly picture taken "
             "for damage on these. concentration and chroma: what `auto` decides on "
             "(`pipeline/detectors/monochrome.py`). s/MP: CPU seconds per megapixel, one "
             f"thread. Sensitivity {args.sensitivity}. Command: `python "
             f"benchmarks/detect_clean_real.py --photos DIR{sweep_option(args.sweep)}"
             f"{' --detect-edge-wear' if args.detect_edge_wear else ''}`"
             f"{' (the sweep with it)' if args.detect_edge_wear else ''}.", "",
             "| photo | size | concentration | chroma99 | auto runs | "
             + " | ".join(f"{d} flagged | {d} s/MP" for d in DETECTORS) + " |",
             "|---|---|---|---|---|" + "---|---|" * len(DETECTORS)]
    swept = []
    for path in paths:
        pixels = imageio.decode(path.read_bytes(), MAX_PIXELS).pixels
        colour = as_rgb(pixels)
        _, chroma, concentration = hue_facts(colour)
        cells = [path.name, f"{pixels.shape[1]}x{pixels.shape[0]}", f"{concentration:.3f}",
                 f"{chroma:.0f}", f"`{auto_detector(pixels, None)}`"]
        masks = []
        for detector in DETECTORS:
            started = time.process_time()
            mask = detect(pixels, detector, args.sensitivity).mask
            seconds = time.process_time() - started
            masks.append(mask)
            cells += [f"{mask.mean():.2%}", f"{seconds / (mask.size / 1e6):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
        figure(pixels, masks, figures / f"{path.stem}.png")
        if args.sweep:
            swept.append(sweep_row(path.name, pixels, args.sweep, args.detect_edge_wear))
    if args.sweep:
        lines += [""] + sweep_table(swept, args.sweep)
    write_uri(str(args.out), ("\n".join(lines) + "\n").encode())
    print(f"figures in {figures}")


if __name__ == "__main__":
    main()
