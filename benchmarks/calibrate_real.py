"""What `inpaint calibrate` gives an archive, measured on the real prints: the setting it picks
on half of them (detector, edge wear and level: `pipeline.calibrate.compare`, then `best_of`)
scored on the other half, for every split both ways, beside the default on that half.

    python benchmarks/calibrate_real.py --photos /path/to/old_w_scratch [--detectors auto combined]

Each photo is scored alone once per setting and level; a split's figures pool its photos'
pixels (2-px tolerance, as `inpaint calibrate` counts them). The photos are not in this
repository (see detect_real.py); the masks are `benchmarks/real/masks`.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
from pathlib import Path

import numpy as np
from detect_real import MASKS, check_same_photo, find_photo

from pipeline import calibrate
from pipeline.calibrate import Calibration, LevelScore, best_level, level_score

OUT = Path(__file__).resolve().parent / "results" / "calibrate-real.md"
DEFAULT_SETTING = ("auto", False)
DEFAULT_LEVEL = 0.5
# The real-set line of issue 17: pooled precision and recall, and every photo's.
POOLED_LINE, PHOTO_LINE = 0.8, 0.6


def per_photo(photos: Path, masks: Path, settings: list[tuple[str, bool]],
              levels: list[float]) -> dict[str, list[Calibration]]:
    """Each masked photo's calibration, alone, for every setting."""
    scored = {}
    for mask in sorted(masks.glob("*.png")):
        photo = find_photo(photos, mask.stem)
        check_same_photo(photo, photo.read_bytes(), masks)
        with tempfile.TemporaryDirectory() as folder:
            images, marked = Path(folder) / "images", Path(folder) / "masks"
            images.mkdir()
            marked.mkdir()
            shutil.copy(photo, images / photo.name)
            shutil.copy(mask, marked / mask.name)
            scored[mask.stem] = calibrate.compare(str(images), str(marked), settings, levels)
    return scored


def pooled(scored: dict[str, list[Calibration]], stems: tuple[str, ...]) -> list[Calibration]:
    """Every setting's calibration over `stems` together, as `calibrate.compare` on a folder
    of them would give it."""
    out = []
    for index, first in enumerate(scored[stems[0]]):
        marked = sum(scored[stem][index].best.marked_pixels for stem in stems)
        levels = [level_score(score.sensitivity,
                              sum(np.array(scored[stem][index].levels[position].counts)
                                  for stem in stems), marked)
                  for position, score in enumerate(first.levels)]
        out.append(Calibration(first.detector, levels, best_level(levels), list(stems), [],
                               first.ran, first.edge_wear))
    return out


def at(calibrations: list[Calibration], setting: tuple[str, bool], level: float) -> LevelScore:
    result = next(c for c in calibrations if (c.detector, c.edge_wear) == setting)
    return next(score for score in result.levels if score.sensitivity == level)


def setting_name(detector: str, edge_wear: bool) -> str:
    return f"`{detector}`" + (" + edge wear" if edge_wear else "")


def split_rows(scored: dict[str, list[Calibration]]) -> tuple[list[str], int]:
    """One table row per split, and how many splits meet the real-set line on the held-out
    half."""
    stems = sorted(scored)
    rows, met = [], 0
    for tuning in itertools.combinations(stems, len(stems) // 2):
        held = tuple(stem for stem in stems if stem not in tuning)
        picked = calibrate.best_of(pooled(scored, tuning))
        setting, level = (picked.detector, picked.edge_wear), picked.best.sensitivity
        score = at(pooled(scored, held), setting, level)
        photos = {stem: at(scored[stem], setting, level) for stem in held}
        default = at(pooled(scored, held), DEFAULT_SETTING, DEFAULT_LEVEL)
        meets = (min(score.precision, score.recall) >= POOLED_LINE
                 and all(min(s.precision, s.recall) >= PHOTO_LINE for s in photos.values()))
        met += meets
        each = "; ".join(f"{stem} {s.precision:.2f} / {s.recall:.2f}" for stem, s in photos.items())
        rows.append(f"| {', '.join(tuning)} | {setting_name(*setting)} at {level} | "
                    f"{', '.join(held)} | {score.precision:.2f} / {score.recall:.2f} / "
                    f"{score.f1:.2f} | {each} | {'yes' if meets else 'no'} | "
                    f"{default.precision:.2f} / {default.recall:.2f} / {default.f1:.2f} |")
    return rows, met


def report(scored: dict[str, list[Calibration]], command: str) -> str:
    rows, met = split_rows(scored)
    settings = ", ".join(setting_name(c.detector, c.edge_wear) for c in scored[min(scored)])
    return "\n".join([
        "# `inpaint calibrate` on the real prints: picked on half, scored on the other half",
        "",
        f"Photos: the real development set (`benchmarks/real/`, not in this repository). "
        f"Settings compared: {settings}, each at every level; the pick is `calibrate.best_of` "
        f"on the tuning half's pooled pixels (best F1; of equals the lower level, then the "
        f"setting named first), as `inpaint calibrate --method ... --compare-edge-wear` prints "
        f"it. Held out: the other half at the picked setting, pooled (precision / recall / F1) "
        f"and per photo (precision / recall); meets: pooled precision and recall at least "
        f"{POOLED_LINE} and no held-out photo below {PHOTO_LINE} on either; default: "
        f"`auto` at {DEFAULT_LEVEL} without edge wear on the same half. 2-px tolerance. "
        f"Command: `{command}`.",
        "",
        "| tuned on | picked | held out | held out, pooled | held out, each | meets | default |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"{met} of {len(rows)} splits meet the line on their held-out half.",
        ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True,
                        help="Local folder of the photos (a.png .. d.png).")
    parser.add_argument("--masks", type=Path, default=MASKS)
    parser.add_argument("--detectors", nargs="+", default=["auto", "combined"])
    parser.add_argument("--levels", type=float, nargs="+", default=list(calibrate.LEVELS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    settings = calibrate.settings_to_compare(args.detectors, both=True)
    settings += [DEFAULT_SETTING] if DEFAULT_SETTING not in settings else []
    levels = sorted(set(args.levels) | {DEFAULT_LEVEL})
    scored = per_photo(args.photos, args.masks, settings, levels)
    if len(scored) < 2:
        raise SystemExit(f"{args.masks} holds {len(scored)} mask(s): a split needs two or more")
    command = ("python benchmarks/calibrate_real.py --photos DIR --detectors "
               + " ".join(args.detectors)
               + ("" if levels == list(calibrate.LEVELS) else
                  " --levels " + " ".join(map(str, levels))))
    text = report(scored, command)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
