"""How much the print net's log-odds count in the `combined` detector (`NET_WEIGHT`), picked as
`train_verifier.calibrate` picks the verifier's threshold: on held-out prints, the best mean F1
among weights that flag at most MAX_CLEAN_FLAGGED of every undamaged twin.

Held-out prints: HOLDOUT_PHOTOS (astronaut, china; never trained on by the verifier or the
net) at HOLDOUT_SIDE px made old prints with `add_print_damage`, seeds SEEDS (not the
verifier's calibration seeds). The benchmark's EVAL_PHOTOS and the real prints are not used.

    python benchmarks/combined_weight.py [--views 1 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from train_detector import HOLDOUT_PHOTOS, HOLDOUT_SIDE, MAX_CLEAN_FLAGGED
from train_verifier import resized, rgb_photo

from pipeline.damage import add_print_damage, mask_scores
from pipeline.detectors import combined, learned, verified
from pipeline.detectors.maps import DEFAULT_SENSITIVITY

SEEDS = (100, 101)
WEIGHTS = tuple(np.arange(0.25, 2.01, 0.25))
OUT = Path(__file__).resolve().parent / "results" / "combined-weight.md"


def net_odds(image: np.ndarray, odds: np.ndarray, views: int) -> np.ndarray:
    """The print net's log-odds at the photo's candidates, in its first `views` views."""
    candidates = np.isfinite(odds)
    if not candidates.any():
        return np.zeros(0, np.float32)
    return combined.net_log_odds(image, candidates, views=learned.VIEWS[:views])


def mask_at(image: np.ndarray, odds: np.ndarray, net: np.ndarray, weight: float) -> np.ndarray:
    """`combined`'s mask of the photo with the net's log-odds at `weight`."""
    return combined.mask_of(image, odds, combined.summed_odds(odds, net, weight),
                            DEFAULT_SENSITIVITY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, nargs="+", default=[1],
                        help="How many of the net's views (flips, turns) to score in.")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    prints = [add_print_damage(resized(rgb_photo(name), HOLDOUT_SIDE), seed=seed)
              for name in HOLDOUT_PHOTOS for seed in SEEDS]
    # Each photo's verifier odds, damaged and undamaged twin: they do not depend on the net.
    odds = [(verified.verified_odds(p.image), verified.verified_odds(p.clean)) for p in prints]
    # `verified`'s own masks: the verifier's odds alone, through the same last steps.
    base_f1 = np.mean([mask_scores(combined.mask_of(p.image, damaged, damaged,
                                                    DEFAULT_SENSITIVITY), p.mask)["f1"]
                       for p, (damaged, _) in zip(prints, odds, strict=True)])
    base_clean = max(combined.mask_of(p.clean, twin, twin, DEFAULT_SENSITIVITY).mean()
                     for p, (_, twin) in zip(prints, odds, strict=True))
    lines = ["# The print net's weight in `combined`", "",
             f"Held-out prints: {', '.join(HOLDOUT_PHOTOS)} at {HOLDOUT_SIDE} px, "
             f"`add_print_damage` seeds {SEEDS}; sensitivity {DEFAULT_SENSITIVITY}. F1: mean over "
             "the damaged prints (2-px tolerance); clean max: the most flagged of any undamaged "
             f"twin; picked: the best F1 with clean max at most {MAX_CLEAN_FLAGGED:.1%}. "
             "Command: `python benchmarks/combined_weight.py --views "
             f"{' '.join(map(str, args.views))}`.", "",
             f"`verified` alone: F1 {base_f1:.3f}, clean max {base_clean:.3%}.", ""]
    for views in args.views:
        photos = [(p, damaged, net_odds(p.image, damaged, views), twin,
                   net_odds(p.clean, twin, views))
                  for p, (damaged, twin) in zip(prints, odds, strict=True)]
        lines += [f"## {views} view(s)", "", "| weight | F1 | clean max |", "|---|---|---|"]
        best = (-1.0, None)
        for weight in WEIGHTS:
            f1 = np.mean([mask_scores(mask_at(p.image, damaged, net, weight), p.mask)["f1"]
                          for p, damaged, net, _, _ in photos])
            clean = max(mask_at(p.clean, twin, twin_net, weight).mean()
                        for p, _, _, twin, twin_net in photos)
            if clean <= MAX_CLEAN_FLAGGED and f1 > best[0]:
                best = (f1, weight)
            lines.append(f"| {weight:.2f} | {f1:.3f} | {clean:.3%} |")
            print(lines[-1], flush=True)
        lines += ["", f"Picked: {best[1]}" if best[1] is not None else "Picked: none", ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
