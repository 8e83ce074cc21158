"""The driver's peak memory while planning 100,000 and 1,000,000 items (issue 19: within
20% of each other).

The synthetic archive is a local folder of empty files, 1,000 per sub-folder
(`box-0000/photo-0000000.jpg`), as a scanned archive is laid out in boxes, with one
`--mask FILE` for all: planning reads listings only, never a photo, so empty files are
fake photos that a listing cannot tell from real ones, and a local folder is the one
store that holds a million objects on this machine (the loopback moto S3 server takes
minutes per 100,000 PUTs). The folders are built once and kept in `--folder`.

Each figure comes from a fresh child process: its peak RSS (Linux VmHWM, which, unlike
ru_maxrss, does not carry the parent's peak over fork and exec), its RSS after the
imports (the floor), and Arrow's own peak allocation. Modes:

- plan: `pipeline.plan` (listing into shards in a temporary folder) and then every item to
  do read back shard by shard, as a run feeds its workers; what a dry run does less the
  printing.
- resume: the same with a manifest that holds every item as done (the join of each shard
  against the manifest's done keys).
- dry-run: `inpaint run --dry-run`, its listing printed to /dev/null.

    python benchmarks/plan_memory.py --results benchmarks/results/speed.md  # 100k, 1M; all
    python benchmarks/plan_memory.py --sizes 1000 2000 --modes plan dry-run
    python benchmarks/plan_memory.py --render benchmarks/results/plan_memory.json \
        --results benchmarks/results/speed.md   # the section again, after speed.py wrote the file
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

PER_FOLDER = 1000


def build_archive(folder: Path, count: int) -> Path:
    """`count` empty photos under folder/n<count>/, 1,000 per box; built once."""
    images = folder / f"n{count}" / "images"
    done = folder / f"n{count}" / ".built"
    if done.exists():
        return images
    for index in range(count):
        box = images / f"box-{index // PER_FOLDER:04d}"
        if index % PER_FOLDER == 0:
            box.mkdir(parents=True, exist_ok=True)
        os.close(os.open(box / f"photo-{index:07d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    done.touch()
    return images


def watermark(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    path = folder / "watermark.png"
    if not path.exists():
        hole = np.zeros((16, 16), np.uint8)
        hole[4:8] = 255
        Image.fromarray(hole).save(path)
    return path


def memory_mb(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) / 1024


def settings_of(images: Path, mask: Path, out: Path):
    from pipeline.settings import RunSettings

    return RunSettings(images=str(images), mask=str(mask), out=str(out), method="telea")


def child(mode: str, images: Path, mask: Path, out: Path) -> dict:
    """One measurement, in this (fresh) process."""
    import pyarrow as pa

    from pipeline import runner

    floor = memory_mb("VmRSS")
    started = time.perf_counter()
    settings = settings_of(images, mask, out)
    if mode == "dry-run":
        from pipeline.cli import main

        sys.argv = ["inpaint", "run", str(images), "--mask", str(mask), "--out", str(out),
                    "--method", "telea", "--dry-run"]
        with open(os.devnull, "w") as sink:
            stdout, sys.stdout = sys.stdout, sink
            try:
                main()
            except SystemExit:
                pass
            finally:
                sys.stdout = stdout
        todo = done = None
    else:
        work = runner.plan(settings, temporary=True)
        todo = sum(1 for _ in work.todo_items())
        done = work.done_count
        work.discard()
    return {"mode": mode, "todo": todo, "done": done, "peak_rss_mb": memory_mb("VmHWM"),
            "floor_rss_mb": floor, "arrow_peak_mb": pa.default_memory_pool().max_memory() / 2**20,
            "seconds": time.perf_counter() - started}


def record_all_done(images: Path, mask: Path, out: Path) -> None:
    """A manifest in which every item is done (what resume then skips), built with Arrow
    from a plan's shards, in its own process."""
    subprocess.run(_python("b.write_done_manifest(*map(b.Path, sys.argv[1:]))", images, mask,
                           out), check=True)


def write_done_manifest(images: Path, mask: Path, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import manifest, runner

    settings = settings_of(images, mask, out)
    work = runner.plan(settings, temporary=True)
    folder = Path(settings.manifest_uri())
    folder.mkdir(parents=True, exist_ok=True)
    for index, table in enumerate(work.shards.tables(["item_id", "input_fingerprint"])):
        rows = table.num_rows
        columns = {name: pa.nulls(rows, manifest.SCHEMA.field(name).type)
                   for name in manifest.COLUMNS}
        columns |= {"item_id": table.column("item_id"),
                    "input_fingerprint": table.column("input_fingerprint"),
                    "run_id": pa.array(["bench"] * rows), "status": pa.array(["ok"] * rows),
                    "params": pa.array([work.params] * rows)}
        pq.write_table(pa.table(columns, schema=manifest.SCHEMA),
                       folder / f"part-bench-{index:05d}.parquet")
    work.discard()


def _python(call: str, *args) -> list[str]:
    """A fresh Python that imports this file as `b` and runs `call` with `args`."""
    here = str(Path(__file__).parent)
    script = f"import sys, json; sys.path.insert(0, {here!r}); import plan_memory as b; {call}"
    return [sys.executable, "-c", script, *map(str, args)]


def measure(mode: str, images: Path, mask: Path, out: Path) -> dict:
    call = "print(json.dumps(b.child(sys.argv[1], *map(b.Path, sys.argv[2:]))))"
    result = subprocess.run(_python(call, mode, images, mask, out),
                            capture_output=True, text=True)
    if result.returncode != 0:
        # capture_output hides the child's words; a bare exit status says nothing.
        raise RuntimeError(f"the {mode} child exited {result.returncode}:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


HEADING = "## Driver memory while planning (issue 19: 1M within 20% of 100k)"


def table(figures: list[dict]) -> str:
    lines = ["| mode | items | peak RSS MB | RSS after imports MB | Arrow peak MB | seconds |",
             "|---|---|---|---|---|---|"]
    for f in figures:
        lines.append(f"| {f['mode']} | {f['items']:,} | {f['peak_rss_mb']:.0f} | "
                     f"{f['floor_rss_mb']:.0f} | {f['arrow_peak_mb']:.0f} | {f['seconds']:.1f} |")
    for mode in dict.fromkeys(f["mode"] for f in figures):
        runs = [f for f in figures if f["mode"] == mode]
        if len(runs) > 1:
            lines.append(f"\n{mode}: peak RSS at {runs[-1]['items']:,} / at {runs[0]['items']:,}"
                         f" = {runs[-1]['peak_rss_mb'] / runs[0]['peak_rss_mb']:.3f}")
    return "\n".join(lines)


END = "<!-- plan_memory.py: figures end; notes written by hand below stay -->"


def write_section(results: Path, figures: list[dict]) -> None:
    """Replace this benchmark's figures in `results` (or add them at the end), keeping the
    notes after them: speed.py writes the rest of that file, so the figures can always be
    written again from their JSON (`--render`)."""
    text = results.read_text() if results.exists() else ""
    figures_text = (f"{HEADING}\n\n`python benchmarks/plan_memory.py` (see its docstring: a "
                    "local folder of empty files, 1,000 per folder, one `--mask FILE`; each "
                    "figure from a fresh process, peak RSS as Linux VmHWM).\n\n"
                    + table(figures) + "\n" + END)
    start = text.find(HEADING)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + figures_text + "\n"
    else:
        end = text.find(END, start)
        text = text[:start] + figures_text + text[end + len(END):]
    results.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--modes", nargs="+", default=["plan", "resume", "dry-run"],
                        choices=["plan", "resume", "dry-run"])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/inpaint-plan-memory"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--results", type=Path, help="write the figures' section into this "
                        "markdown file (benchmarks/results/speed.md)")
    parser.add_argument("--render", type=Path, help="measure nothing: write the section of "
                        "figures saved with --json")
    args = parser.parse_args()
    if args.render:
        write_section(args.results or Path("benchmarks/results/speed.md"),
                      json.loads(args.render.read_text()))
        return
    args.folder.mkdir(parents=True, exist_ok=True)
    mask = watermark(args.folder)
    figures = []
    for size in args.sizes:
        started = time.perf_counter()
        images = build_archive(args.folder, size)
        print(f"{size} empty photos ready in {time.perf_counter() - started:.0f}s", flush=True)
        out = args.folder / f"n{size}" / "out"
        for mode in args.modes:
            if mode == "resume":
                record_all_done(images, mask, out)
            figure = measure(mode, images, mask, out) | {"items": size}
            if mode == "resume":
                import shutil

                shutil.rmtree(out / "_manifest")
            figures.append(figure)
            print(json.dumps(figure), flush=True)
    print("\n" + table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    if args.results:
        write_section(args.results, figures)


if __name__ == "__main__":
    main()
