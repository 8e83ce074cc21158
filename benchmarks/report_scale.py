"""How long `inpaint report` takes, and how much memory, on a 100,000-row manifest.

Builds a synthetic archive folder: a manifest of ROWS rows in two runs (two methods, ~1%
failed, ~0.5% skipped) written by the real `ManifestWriter` in its usual 500-row parts,
pointing at a pool of 64 real photos, masks and outputs (rows share them; the report reads
only the sample's). Each report is built in a fresh Python process, which reports its wall
seconds and peak RSS; the RSS right after imports is given too, so the report's own share
shows. Run: python benchmarks/report_scale.py [--rows 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from pipeline.manifest import ManifestWriter, empty_row
from pipeline.masks import synthetic_mask

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry"]
POOL = 64
RESULTS = Path(__file__).parent / "results" / "report_scale.json"

MEASURE = """
import json, resource, sys, time, psutil
from pipeline import report
after_imports = psutil.Process().memory_info().rss
clock = time.perf_counter()
index = report.build(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - clock
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak / 2**20,
                  "rss_after_imports_mb": after_imports / 2**20, "index": index}))
"""


def make_pool(root: Path) -> list[tuple[str, str, str]]:
    """POOL (image, mask, output) triples of real 512-px photos with strokes masks."""
    pool = []
    for index in range(POOL):
        photo = Image.fromarray(getattr(data, PHOTOS[index % len(PHOTOS)])()).convert("RGB")
        photo.thumbnail((512, 512))
        pixels = np.asarray(photo)
        hole = synthetic_mask("strokes", pixels.shape[0], pixels.shape[1], seed=index)
        paths = [root / kind / f"{index:03d}.jpg" for kind in ("images", "masks", "out")]
        paths[1] = paths[1].with_suffix(".png")
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
        photo.save(paths[0], quality=90)
        Image.fromarray(hole.astype(np.uint8) * 255).save(paths[1])
        photo.save(paths[2], quality=90)
        pool.append(tuple(str(path) for path in paths))
    return pool


def write_manifest(root: Path, rows: int, pool: list[tuple[str, str, str]]) -> str:
    rng = random.Random(0)
    uri = str(root / "out" / "_manifest")
    start = datetime(2026, 11, 20, tzinfo=UTC)
    split = int(rows * 0.6)
    for run_id, method, first, last in (("run-a", "telea", 0, split), ("run-b", "ns", split,
                                                                        rows)):
        writer = ManifestWriter(uri, run_id)
        for number in range(first, last):
            writer.add([synthetic_row(number, method, pool, rng, start)])
        writer.flush()
    return uri


def synthetic_row(number: int, method: str, pool, rng: random.Random, start: datetime) -> dict:
    image, mask, output = pool[number % len(pool)]
    fraction = min(0.6, rng.expovariate(1 / 0.08))
    seconds = 0.02 + fraction * rng.uniform(0.5, 3.0)
    began = start + timedelta(seconds=number * 0.05)
    status = rng.choices(["ok", "failed", "skipped"], [0.985, 0.01, 0.005])[0]
    row = empty_row() | {
        "item_id": f"{number:020d}", "relative_path": f"box{number // 1000:03d}/scan{number}.jpg",
        "image_uri": image, "mask_uri": mask, "output_uri": output, "status": status,
        "method": method, "params": json.dumps({"method": method, "method_params":
                                                {"radius": 5.0}, "invert_mask": False}),
        "input_fingerprint": "f" * 32, "input_sha256": "0" * 64, "width": 512, "height": 384,
        "hole_fraction": fraction, "seconds": seconds, "input_bytes": rng.randint(40_000, 90_000),
        "worker": f"node{number % 8}:{1000 + number % 4}", "device": "cpu",
        "started_at": began, "finished_at": began + timedelta(seconds=seconds),
    }
    if status == "ok":
        row["output_bytes"] = rng.randint(40_000, 90_000)
    elif status == "failed":
        kind = rng.choice(["decode", "mask", "storage"])
        row |= {"error": f"{kind} problem in scan{number}", "error_kind": kind, "output_uri": None}
    else:
        row["error"] = "empty mask: nothing to fill, input copied"
    return row


def measure(manifest_uri: str, out: str) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, manifest_uri, out],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"report failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file to write.")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        pool = make_pool(Path(folder) / "pool")
        for rows in args.rows:
            root = Path(folder) / f"rows{rows}"
            clock = time.perf_counter()
            uri = write_manifest(root, rows, pool)
            generated = time.perf_counter() - clock
            figures = measure(uri, str(root / "out" / "_report"))
            figures |= {"rows": rows, "manifest_generation_seconds": round(generated, 1)}
            figures.pop("index")
            print(json.dumps(figures), flush=True)
            results.append(figures)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"),
                                   "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
