"""Benchmark the damage detectors on development photos with seeded synthetic damage.

Evaluation photos (never used in training, see benchmarks/train_detector.py): chelsea,
coffee, rocket, hubble_deep_field, retina, immunohistochemistry from scikit-image, long
side LONG_SIDE px, SEEDS damage draws each. Reports pixel precision / recall / F1 with a
2-px tolerance, the share of an undamaged photo flagged, PSNR against the clean photo for
the damaged photo, detect-then-fill and fill with the true mask, and seconds per megapixel.

    python benchmarks/detect.py [--detectors learned tophat] [--out benchmarks/results/detect.md]
"""

from __future__ import annotations

import argparse
import time
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data
from train_detector import HOLDOUT_PHOTOS, TRAIN_PHOTOS

from pipeline.damage import add_damage, add_print_damage, mask_scores, synthetic_infrared
from pipeline.detect import detect
from pipeline.detectors import combined
from pipeline.methods import load_method
from pipeline.settings import DEFAULT_METHOD

EVAL_PHOTOS = ("chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
               "immunohistochemistry")
LONG_SIDE = 512
SEEDS = (1, 2)
# What `inpaint run --masks auto` fills with by default: `hallucinate`, which keeps
# scikit-image's biharmonic fill for thin holes (all of a detector's are, nearly).
FILL = DEFAULT_METHOD


DAMAGE_NOTES = {
    "digital": "`pipeline.damage.add_damage`, default `DamageParams`: dust, scratches and hairs "
               "on the photo as it is",
    "print": "`pipeline.damage.add_print_damage`, default `PrintDamageParams`: the photo as an "
             "old print, toned, grainy and scanned, with cracks, crackle, scratches, flakes, "
             "worn edges, creases, specks, stains, foxing and hairs",
}


def photo(name: str) -> np.ndarray:
    pixels = getattr(data, name)()
    scale = LONG_SIDE / max(pixels.shape[:2])
    size = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


@lru_cache(maxsize=1)
def fill_method():
    return load_method(FILL)


def fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return fill_method()(image, mask).pixels if mask.any() and not mask.all() else image


def enlarged(pixels: np.ndarray | None, factor: int, nearest: bool = False):
    """The print scanned at `factor` times the dpi: everything, damage included, larger."""
    if pixels is None or factor == 1:
        return pixels
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_CUBIC
    return cv2.resize(pixels, None, fx=factor, fy=factor, interpolation=interpolation)


def measure(detector: str, name: str, seed: int, sensitivity: float, enlarge: int = 1,
            scale: float = 1.0, damage_kind: str = "digital",
            edge_wear: bool = False) -> dict[str, float]:
    clean = photo(name)
    if damage_kind == "print":
        # The photo as an old print (toned, grainy, scanned) with realistic damage; the
        # undamaged print is the same print scanned alike.
        damage = add_print_damage(clean, seed=seed)
        clean = damage.clean
    else:
        damage = add_damage(clean, seed=seed)
    # The infrared detector reads a synthetic IR channel, as a film scanner would record it.
    infrared = synthetic_infrared(damage, seed) if detector == "infrared" else None
    clean_infrared = (synthetic_infrared(add_damage(clean, seed=seed, kinds=()), seed)
                      if detector == "infrared" else None)
    damage.image, infrared, clean_infrared, clean = (
        enlarged(a, enlarge) for a in (damage.image, infrared, clean_infrared, clean))
    damage.mask = enlarged(damage.mask.astype(np.uint8), enlarge, nearest=True) > 0
    started = time.process_time()
    found = detect(damage.image, detector, sensitivity, infrared, scale=scale,
                   edge_wear=edge_wear)
    seconds = time.process_time() - started
    untouched = detect(clean, detector, sensitivity, clean_infrared, scale=scale,
                       edge_wear=edge_wear)
    clean_fill = fill(clean, untouched.mask)
    return mask_scores(found.mask, damage.mask) | {
        "clean_flagged": untouched.damage_fraction,
        "psnr_damaged": psnr(damage.image, clean),
        "psnr_detect_fill": psnr(fill(damage.image, found.mask), clean),
        "psnr_true_fill": psnr(fill(damage.image, damage.mask), clean),
        "psnr_clean_auto": psnr(clean_fill, clean),
        "damage_share": float(damage.mask.mean()),
        "seconds_per_mp": seconds / (clean.shape[0] * clean.shape[1] / 1e6),
    }


COLUMNS = ("precision", "recall", "f1", "clean_flagged", "psnr_damaged", "psnr_detect_fill",
           "psnr_true_fill", "psnr_clean_auto", "seconds_per_mp")


def table(rows: dict[tuple[str, str], dict[str, float]], detector: str) -> list[str]:
    lines = [f"### {detector}", "",
             "| photo | " + " | ".join(COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    names = sorted({n for d, n in rows if d == detector}, key=EVAL_PHOTOS.index)
    for name in [*names, "mean"]:
        picked = [r for (d, n), r in rows.items() if d == detector and (n == name or
                                                                          name == "mean")]
        cells = []
        for column in COLUMNS:
            values = [min(r[column], 99.0) for r in picked]
            # The issue asks that *an* undamaged photo stay above 45 dB: show the worst.
            worst = name == "mean" and column == "psnr_clean_auto"
            value = float(np.min(values) if worst else np.mean(values))
            cells.append(f"{value:.2%}" if column == "clean_flagged" else
                         f"{value:.3f}" if column in ("precision", "recall", "f1") else
                         f"{value:.2f}")
        label = "**mean** (psnr_clean_auto: worst)" if name == "mean" else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def scan_note(enlarge: int, scale: float) -> str:
    if enlarge == 1 and scale == 1:
        return ""
    return (f"; the damaged print scanned at {enlarge}x the dpi (photo and damage enlarged "
            f"{enlarge}x, bicubic, after damaging: long side {LONG_SIDE * enlarge} px), "
            f"detected with `--detect-scale {scale}`")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="+", default=["learned", "tophat", "infrared"])
    parser.add_argument("--photos", nargs="+", default=list(EVAL_PHOTOS))
    parser.add_argument("--sensitivity", type=float, default=0.5)
    parser.add_argument("--enlarge", type=int, default=1, help="Scan the damaged print at this "
                        "many times the dpi (photo and damage enlarged alike).")
    parser.add_argument("--detect-scale", type=float, default=1.0,
                        help="Detect on the photo shrunk by this factor (`--detect-scale`).")
    parser.add_argument("--damage", choices=("digital", "print"), default="digital",
                        help="digital: `add_damage` on the photo as it is; print: the photo "
                        "as an old print with `add_print_damage` (cracks, crackle, flakes...).")
    parser.add_argument("--detect-edge-wear", action="store_true",
                        help="verified and combined with `--detect-edge-wear`.")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "detect.md"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    rows = {}
    for detector in args.detectors:
        # Load the detector's nets before the clock starts: s/MP is the per-photo cost. (A
        # 64-px corner may hold no candidate, and `combined` runs its net only where one is.)
        detect(photo(args.photos[0])[:64, :64], detector,
               infrared=np.zeros((64, 64), np.uint8) if detector == "infrared" else None)
        if detector == "combined":
            combined.load_print_net()
        for name in args.photos:
            per_seed = [measure(detector, name, seed, args.sensitivity, args.enlarge,
                                args.detect_scale, args.damage, args.detect_edge_wear)
                        for seed in SEEDS]
            rows[(detector, name)] = {k: float(np.mean([r[k] for r in per_seed]))
                                      for k in per_seed[0]}
            print(detector, name, {k: round(v, 4) for k, v in rows[(detector, name)].items()},
                  flush=True)
    lines = ["# Damage detection benchmark", "",
             f"Photos from scikit-image at long side {LONG_SIDE} px, synthetic damage "
             f"({DAMAGE_NOTES[args.damage]}, seeds {SEEDS}); fill: "
             f"`{FILL}`, the tool's default method, as `inpaint run --masks auto` fills with "
             "default settings (it keeps scikit-image's biharmonic fill for thin holes); "
             f"sensitivity {args.sensitivity}{scan_note(args.enlarge, args.detect_scale)}. "
             "Pixel scores with a 2-px tolerance. "
             "clean_flagged: share of the undamaged photo's pixels the detector flags. "
             "psnr_* in dB against the clean photo: the damaged photo, detect-then-fill, fill "
             "with the true mask, and the undamaged photo through detect-then-fill "
             "(`--masks auto`; 99 = identical, nothing flagged). seconds_per_mp: detection "
             "only, CPU seconds of the process (torch and OpenCV on one thread: the wall clock "
             "on a 2-core machine shared with other jobs says more about the others). "
             f"Command: `python benchmarks/detect.py --damage {args.damage} "
             f"--detectors {' '.join(args.detectors)}"
             f"{' --detect-edge-wear' if args.detect_edge_wear else ''}`.",
             "", f"Training photos (never evaluated here): {', '.join(TRAIN_PHOTOS)}; "
             f"threshold picked on held-out training photo(s) {', '.join(HOLDOUT_PHOTOS)} "
             "(`python benchmarks/train_detector.py`).", ""]
    for detector in args.detectors:
        lines += table(rows, detector)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
