"""What the learned detector's scoring costs, three ways in one run: the net as trained in
eight views everywhere (as shipped before), the net folded for scoring (batch norm in its
convolutions) in eight views everywhere, and folded with the cascade of views the detector
runs (`learned.cascade_probability`). CPU seconds per megapixel on one thread, the best of
REPEATS; and how many pixels of the mask the cascade changes.

    python benchmarks/detect_speed.py [--real DIR] [--out benchmarks/results/detect-speed.md]

Photos: the detection benchmark's six (damaged, seed 1), the prints in DIR (any images; their
licence may keep them out of the repo), and astronaut enlarged to BIG_SIDE px, damaged.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from detect import EVAL_PHOTOS, photo

from pipeline.damage import add_damage
from pipeline.detectors import learned
from pipeline.detectors.maps import float_image, hysteresis, in_bands, load_weights

REPEATS = 2
BIG_SIDE = 2048


def scorers(threshold: float) -> dict:
    trained = learned.net_from_weights(load_weights(learned.WEIGHTS_FILE)).eval()
    folded = learned.load_net()

    def everywhere(net):
        return lambda pixels: in_bands(pixels, learned.band_rows(pixels.shape[1]),
                                       learned.TILE_OVERLAP,
                                       lambda part: learned.net_probability(net, part))
    return {"eight views, as trained": everywhere(trained),
            "eight views, folded": everywhere(folded),
            "folded, cascade": lambda pixels: learned.damage_probability(
                pixels, thresholds=(threshold / 2, threshold))}


def photos(real: str | None) -> list[tuple[str, np.ndarray]]:
    items = [(name, add_damage(photo(name), seed=1).image) for name in EVAL_PHOTOS]
    if real:
        for path in sorted(Path(real).iterdir()):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                items.append((f"print {path.stem}", image[:, :, ::-1]))
    big = cv2.resize(photo("astronaut"), (BIG_SIDE, BIG_SIDE), interpolation=cv2.INTER_CUBIC)
    items.append((f"astronaut at {BIG_SIDE} px", add_damage(big, seed=1).image))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", help="A folder of scanned prints to time as well.")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"
                                             / "detect-speed.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    threshold = float(load_weights(learned.WEIGHTS_FILE)["threshold"])
    ways = scorers(threshold)
    lines = ["# What the learned detector's scoring costs", "",
             "CPU seconds per megapixel (one thread, best of "
             f"{REPEATS}, one run: `python benchmarks/detect_speed.py"
             f"{' --real DIR' if args.real else ''}`), sensitivity 0.5. `changed`: pixels "
             "whose flag differs between the cascade and eight views everywhere "
             "(as trained).", "",
             f"| photo | MP | {' | '.join(ways)} | cascade / as trained | changed |",
             "|---|---|---|---|---|---|---|"]
    for name, image in photos(args.real):
        pixels = float_image(image)
        megapixels = pixels.shape[0] * pixels.shape[1] / 1e6
        seconds, masks = {way: np.inf for way in ways}, {}
        for _ in range(REPEATS):
            for way, score in ways.items():  # interleaved: the machine's drift hits all alike
                started = time.process_time()
                masks[way] = hysteresis(score(pixels), threshold / 2, threshold)
                seconds[way] = min(seconds[way], (time.process_time() - started) / megapixels)
        first, *_, last = ways
        changed = int((masks[first] != masks[last]).sum())
        cells = " | ".join(f"{seconds[way]:.2f}" for way in ways)
        lines.append(f"| {name} | {megapixels:.2f} | {cells} | "
                     f"{seconds[last] / seconds[first]:.2f} | {changed} |")
        print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
