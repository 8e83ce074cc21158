"""How the real damaged prints differ from the synthetic prints `verified` is trained on, as its
verifier sees them, and whether two of the real prints teach it anything about the other two.

1. Feature gap: for the candidate pixels of damage and of picture (`train_verifier.examples`:
   the true mask's 1-px ring left out), each verifier feature's AUC at telling a real print's
   pixels from a synthetic training print's (0.5: alike; far from it: the synthetic prints
   differ there), with both medians. Synthetic: one seed's training examples
   (`train_verifier.training_set`), at most SAMPLE of each class.
2. Transfer (`--transfer`): a perceptron trained on those synthetic examples alone (seed 0,
   as one member of the shipped verifier), and one each with two real prints' examples added
   REPEAT times, each scored on the real prints it did not see: pooled precision / recall / F1
   at the threshold with the best F1 on them (an oracle level, to compare rankings), and at
   the level that flags about CLEAN_TARGET of the undamaged synthetic prints
   (`detect.EVAL_PHOTOS`, seed 1), with that share. Nothing here is shipped.

    python benchmarks/real_gap.py --photos /path/to/old_w_scratch [--transfer]

The real photos are those of `detect_real.py` (not in this repository; their masks are ours);
the results file holds numbers only.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import train_verifier
from detect import EVAL_PHOTOS, photo
from detect_real import MASKS, check_same_photo, find_photo, read_mask
from sklearn.metrics import roc_auc_score

from pipeline.calibrate import level_score, pixel_counts
from pipeline.damage import add_print_damage
from pipeline.detectors import verified

OUT = Path(__file__).resolve().parent / "results" / "real-gap.md"
SAMPLE = 60_000
REPEAT = 3
CLEAN_TARGET = 0.01
LEVELS = np.arange(-2.0, 8.01, 0.5)
SHOWN = 12  # features per table, the most different first


def real_prints(folder: Path, masks: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(RGB pixels, true mask) of every photo with a mask in `masks`, by stem."""
    prints = {}
    for mask_path in sorted(masks.glob("*.png")):
        path = find_photo(folder, mask_path.stem)
        data = path.read_bytes()
        check_same_photo(path, data, masks)
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read the photo {path}")
        prints[mask_path.stem] = (cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                                  read_mask(mask_path, bgr.shape[:2]))
    if len(prints) < 2:
        raise SystemExit(f"need at least two masked photos in {masks}, found {len(prints)}")
    return prints


def feature_gap(synthetic: tuple[np.ndarray, np.ndarray],
                real: tuple[np.ndarray, np.ndarray], rng: np.random.Generator) -> list[str]:
    lines = []
    for label, kind in ((1, "damage"), (0, "picture")):
        ours = synthetic[0][synthetic[1] == label]
        ours = ours[rng.choice(len(ours), min(SAMPLE, len(ours)), replace=False)]
        theirs = real[0][real[1] == label]
        truth = np.r_[np.zeros(len(ours)), np.ones(len(theirs))]
        rows = []
        for index, name in enumerate(verified.FEATURES):
            auc = roc_auc_score(truth, np.r_[ours[:, index], theirs[:, index]])
            rows.append((abs(auc - 0.5), name, auc, np.median(ours[:, index]),
                         np.median(theirs[:, index])))
        lines += ["", f"### {kind} pixels (synthetic {len(ours)}, real {len(theirs)})", "",
                  "| feature | AUC real vs synthetic | median synthetic | median real |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {auc:.2f} | {ours_median:.3f} | {real_median:.3f} |"
                  for _, name, auc, ours_median, real_median in sorted(rows, reverse=True)[:SHOWN]]
    return lines


def trained(synthetic: tuple[np.ndarray, np.ndarray],
            added: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    x = np.concatenate([synthetic[0]] + [x for x, _ in added] * REPEAT)
    y = np.concatenate([synthetic[1]] + [y for _, y in added] * REPEAT)
    weights = train_verifier.train(x, y, 0, 1e-3)
    weights["encoder"] = np.float32(verified.ENCODER_SCALE)
    return weights


def pooled(found: dict[str, np.ndarray], held: dict[str, tuple[np.ndarray, np.ndarray]],
           level: float) -> tuple[float, float, float]:
    """Precision, recall and F1 of the held-out prints' pixels together, as `inpaint
    calibrate` pools them."""
    counts = sum(pixel_counts(found[stem], true) for stem, (_, true) in held.items())
    score = level_score(level, counts, sum(int(true.sum()) for _, true in held.values()))
    return score.precision, score.recall, score.f1


def transfer_row(label: str, weights: dict, held: dict[str, tuple[np.ndarray, np.ndarray]],
                 clean: list[np.ndarray]) -> str:
    real_odds = {stem: verified.verified_odds(pixels, weights)
                 for stem, (pixels, _) in held.items()}
    clean_odds = [verified.verified_odds(pixels, weights) for pixels in clean]
    rows = []
    for level in LEVELS:
        found = {stem: verified.flagged_at(pixels, real_odds[stem], level)
                 for stem, (pixels, _) in held.items()}
        flagged = float(np.mean([verified.flagged_at(pixels, odds, level).mean()
                                 for pixels, odds in zip(clean, clean_odds, strict=True)]))
        rows.append((level, *pooled(found, held, level), flagged))
    best = max(rows, key=lambda row: row[3])
    capped = [row for row in rows if row[4] <= CLEAN_TARGET] or [rows[-1]]
    at_clean = min(capped, key=lambda row: row[0])
    return (f"| {label} | {', '.join(held)} | {best[1]:.2f} / {best[2]:.2f} / {best[3]:.2f} "
            f"({best[0]:+.1f}, {best[4]:.2%}) | {at_clean[1]:.2f} / {at_clean[2]:.2f} / "
            f"{at_clean[3]:.2f} ({at_clean[0]:+.1f}, {at_clean[4]:.2%}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True,
                        help="Local folder of the real photos (a.png .. d.png).")
    parser.add_argument("--masks", type=Path, default=MASKS)
    parser.add_argument("--transfer", action="store_true",
                        help="Also train and score the transfer perceptrons (minutes).")
    parser.add_argument("--train-photos", nargs="+", default=list(train_verifier.TRAIN_PHOTOS),
                        help="Synthetic training photos (fewer: a quick, rougher run).")
    parser.add_argument("--clean-photos", nargs="+", default=list(EVAL_PHOTOS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    started = time.perf_counter()
    prints = real_prints(args.photos, args.masks)
    train_verifier.TRAIN_PHOTOS = tuple(args.train_photos)
    synthetic = train_verifier.training_set(0, train_verifier.PICTURE_SHARE, True, 0.0)
    examples = {stem: train_verifier.examples(pixels, true, True)
                for stem, (pixels, true) in prints.items()}
    real = tuple(np.concatenate(parts) for parts in zip(*examples.values(), strict=True))
    command = "python benchmarks/real_gap.py --photos DIR" + (" --transfer" * args.transfer)
    lines = ["# Real prints against the synthetic training prints, as the verifier sees them",
             "", f"`{command}`; real prints {', '.join(prints)}; synthetic: seed 0 of "
             f"`train_verifier.training_set` over {len(args.train_photos)} training photos. "
             "AUC far from 0.5: the synthetic prints' pixels differ from the real ones there.",
             "", "## Feature gap"]
    lines += feature_gap(synthetic, real, np.random.default_rng(0))
    if args.transfer:
        clean = [add_print_damage(photo(name), seed=1).clean for name in args.clean_photos]
        lines += ["", "## Transfer: what two real prints teach a verifier about the others", "",
                  f"Seed-0 perceptron; real examples added {REPEAT} times. Held-out pooled "
                  "precision / recall / F1 at the best level on the held-out prints (log-odds, "
                  f"undamaged synthetic prints flagged) and at the keenest level flagging at most "
                  f"{CLEAN_TARGET:.0%} of those.", "",
                  "| trained with | scored on | best level | at the clean level |",
                  "|---|---|---|---|"]
        stems = list(prints)
        alone = trained(synthetic, [])
        for size in (len(stems) // 2,):
            for tuned in itertools.combinations(stems, size):
                held = {stem: prints[stem] for stem in stems if stem not in tuned}
                lines.append(transfer_row("synthetic only", alone, held, clean))
                with_real = trained(synthetic, [examples[stem] for stem in tuned])
                lines.append(transfer_row(f"synthetic + {', '.join(tuned)}", with_real, held,
                                          clean))
    lines += ["", f"({time.perf_counter() - started:.0f} s)"]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
