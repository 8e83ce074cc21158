"""Peak memory of restoring one big scan in-process: a 40 MP 16-bit RGB TIFF with scratches.

Builds the scan (an upscaled scikit-image photo, LZW-compressed, 16 bits per channel)
and a mask of a few long scratches in a temporary folder, then restores it in a fresh
child process with `pipeline.restore_items` and reports that process's peak RSS.

    python benchmarks/big_scan_memory.py --method telea
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile
from skimage import data


def scan_size(megapixels: float) -> tuple[int, int]:
    """Width and height of a 3:2 scan (40 MP: 7746 x 5164)."""
    height = round((megapixels * 1e6 / 1.5) ** 0.5)
    return round(height * 1.5), height


def build_scan(folder: Path, scratches: int, seed: int = 0, megapixels: float = 40) -> dict:
    WIDTH, HEIGHT = scan_size(megapixels)  # noqa: N806
    photo = cv2.resize(data.chelsea(), (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    scan = photo.astype(np.uint16) * 257
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    tifffile.imwrite(folder / "images" / "scan.tif", scan, photometric="rgb",
                     compression="lzw", predictor=True)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    rng = np.random.default_rng(seed)
    for _ in range(scratches):
        start = rng.uniform((0, 0), (WIDTH, HEIGHT))
        end = start + rng.normal(0, 2500, size=2)
        cv2.line(mask, tuple(int(v) for v in start), tuple(int(v) for v in end), 255,
                 int(rng.integers(2, 6)))
    cv2.imwrite(str(folder / "masks" / "scan.png"), mask)
    return {"megapixels": WIDTH * HEIGHT / 1e6, "hole_fraction": float((mask > 0).mean()),
            "raw_pixels_mb": scan.nbytes / 1e6,
            "file_mb": (folder / "images" / "scan.tif").stat().st_size / 1e6}


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's VmHWM, because ru_maxrss carries the parent's peak
    over fork and exec (the parent here held the 40 MP scan while building it)."""
    status = Path("/proc/self/status")
    if status.exists():
        match = re.search(r"VmHWM:\s+(\d+)", status.read_text())
        if match:
            return int(match.group(1)) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def restore_once(folder: str, method: str) -> dict:
    """Runs in the child: import, note the RSS, restore, note the peak."""
    from pipeline import RunSettings, restore_items

    before = peak_rss_mb()
    started = time.perf_counter()
    rows = restore_items(RunSettings(images=f"{folder}/images", masks=f"{folder}/masks",
                                     out=f"{folder}/out", method=method))
    peak = peak_rss_mb()
    return {"status": rows[0]["status"], "error": rows[0]["error"],
            "seconds": round(time.perf_counter() - started, 1),
            "rss_after_imports_mb": round(before), "peak_rss_mb": round(peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="telea")
    parser.add_argument("--scratches", type=int, default=6)
    parser.add_argument("--megapixels", type=float, default=40)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(restore_once(args.child, args.method)))
        return
    with tempfile.TemporaryDirectory() as folder:
        scan = build_scan(Path(folder), args.scratches, megapixels=args.megapixels)
        child = subprocess.run([sys.executable, __file__, "--method", args.method,
                                "--child", folder], capture_output=True, text=True, check=True)
        result = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps({"method": args.method, **scan, **result}, indent=2))


if __name__ == "__main__":
    main()
