"""Where the time goes: pipeline overhead, cost against photo size, optimizer overhead,
throughput by method and peak memory, measured on this machine.

Writes `benchmarks/results/speed.md` and `speed.png`. Every comparison is a ratio of two
figures measured in the same run (absolute times on a shared machine are noise); figures
are medians over repeats. `--quick` runs tiny sizes only, to prove the script works.
Run: python benchmarks/speed.py [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from pipeline.masks import synthetic_mask

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "hubble_deep_field", "retina")
METHODS = ("telea", "ns", "exemplar", "fsr", "biharmonic", "tv", "hallucinate")


def machine() -> dict[str, str]:
    import ray
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "gpu": gpu, "torch": torch.__version__,
            "ray": ray.__version__, "python": platform.python_version()}


def photo(name: str, long_side: int) -> np.ndarray:
    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    scale = long_side / max(image.size)
    return np.asarray(image.resize((round(image.width * scale), round(image.height * scale)),
                                   Image.Resampling.LANCZOS))


def median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# 1. Pipeline efficiency ---------------------------------------------------------------

def write_archive(root: Path, count: int, long_side: int) -> None:
    for index in range(count):
        image = photo(PHOTOS[index % len(PHOTOS)], long_side)
        Image.fromarray(image).save(root / "images" / f"p{index:03d}.png")
        hole = synthetic_mask("strokes", image.shape[0], image.shape[1], seed=index)
        Image.fromarray(hole.astype(np.uint8) * 255).save(root / "masks" / f"p{index:03d}.png")


def pipeline_throughput(root: Path, method: str, workers: int, threads: int) -> float:
    """Items per second of `inpaint run` on the embedded Ray, start-up included."""
    out = root / f"out-{workers}x{threads}"
    command = [sys.executable, "-c", "from pipeline.cli import main; main()", "run",
               str(root / "images"), "--masks", str(root / "masks"), "--out", str(out),
               "--method", method, "--workers", str(workers), "--cpus-per-worker", str(threads),
               "--no-report"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    return len(list((root / "images").iterdir())) / seconds, steady_throughput(out)


def steady_throughput(out: Path, manifest_uri: bool = False) -> float:
    """Items per second between the first item's start and the last item's finish, from
    the manifest (`out`/_manifest, or `out` itself with `manifest_uri`): the pipeline
    without Ray's and the actors' start-up."""
    from pipeline import manifest

    table = manifest.dataset(str(out if manifest_uri else out / "_manifest")).to_table(
        columns=["started_at", "finished_at"])
    first = min(table.column("started_at").to_pylist())
    last = max(table.column("finished_at").to_pylist())
    return table.num_rows / (last - first).total_seconds()


def loop_throughput(root: Path, method: str, threads: int) -> float:
    """Items per second of a plain in-process loop over `pipeline.inpaint`, same settings."""
    script = f"""
import time, sys, numpy as np, torch, cv2
from pathlib import Path
from PIL import Image
from pipeline import load_method
torch.set_num_threads({threads}); cv2.setNumThreads({threads})
root = Path({str(root)!r})
start = time.perf_counter()
method = load_method({method!r})
for path in sorted((root / "images").iterdir()):
    image = np.asarray(Image.open(path))
    hole = np.asarray(Image.open(root / "masks" / path.name)) > 127
    out = method(image, hole).pixels
    Image.fromarray(out).save(root / "loop-out.png")
print(len(list((root / "images").iterdir())) / (time.perf_counter() - start))
"""
    result = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                            text=True)
    return float(result.stdout.strip().splitlines()[-1])


def pipeline_efficiency(method: str, count: int, long_side: int, quick: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "images").mkdir()
        (root / "masks").mkdir()
        write_archive(root, count, long_side)
        cores = os.cpu_count() or 1
        # Each side in its best configuration: try one actor/thread per core and one of
        # everything (quick mode tries only the first).
        # Each side in its expected best configuration (probing more of them does not fit
        # the 10-minute budget on 2 cores): one single-threaded actor per core for the
        # pipeline (FSR holds the GIL, so processes beat threads), all cores' threads for
        # the loop (the most one process can use).
        end_to_end, steady = pipeline_throughput(root, method, cores, 1)
        pipeline_runs = {f"{cores} workers x 1 thread": end_to_end}
        loop_runs = {f"{cores} threads": loop_throughput(root, method, cores)}
    best_pipeline = max(pipeline_runs.values())
    best_loop = max(loop_runs.values())
    return {"items": count, "long_side": long_side, "method": method,
            "pipeline": pipeline_runs, "loop": loop_runs,
            "ratio": best_pipeline / best_loop, "steady_pipeline": steady,
            "steady_ratio": steady / best_loop}


# 1b. Small items at loop speed ---------------------------------------------------------

def write_small_items(root: Path, count: int, side: int, masks: bool = False) -> None:
    """`count` `side`-px PNG crops of one photo under root/images, and one 128-px mask
    (`--mask`, resized to each) or, with `masks`, one mask per photo under root/masks."""
    base = photo("astronaut", 4 * side)
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for index in range(count):
        top, left = rng.integers(0, 3 * side, 2)
        Image.fromarray(base[top:top + side, left:left + side]).save(
            root / "images" / f"p{index:05d}.png")
    hole = synthetic_mask("strokes", 128, 128, seed=1)
    Image.fromarray(hole.astype(np.uint8) * 255).save(root / "mask.png")
    if masks:
        (root / "masks").mkdir()
        small = hole[::128 // side, ::128 // side].astype(np.uint8) * 255
        for index in range(count):
            Image.fromarray(small).save(root / "masks" / f"p{index:05d}.png")


def run_cli(images: str, out: str, method: str, workers: int, extra: list[str],
            env: dict | None = None) -> float:
    """Seconds of one `inpaint run` (Ray's start-up included), failing loudly."""
    command = [sys.executable, "-c", "from pipeline.cli import main; main()", "run", images,
               "--out", out, "--method", method, "--workers", str(workers), "--no-report",
               *extra]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"inpaint run failed ({result.returncode}): {result.stderr[-2000:]}")
    return time.perf_counter() - start


def small_loop(root: Path, method: str) -> float:
    """Items per second of a plain single-process loop doing the pipeline's work on each
    item (read, fill, encode, write), its imports and the mask's one read included."""
    script = f"""
import io, time, numpy as np, cv2
from pathlib import Path
from PIL import Image
start = time.perf_counter()
from pipeline import load_method
cv2.setNumThreads(1)
root = Path({str(root)!r}); out = root / "loop-out"; out.mkdir()
method = load_method({method!r})
mask, holes = np.asarray(Image.open(root / "mask.png").convert("L")), {{}}
paths = sorted((root / "images").iterdir())
for path in paths:
    image = np.asarray(Image.open(io.BytesIO(path.read_bytes())))
    size = image.shape[:2]
    if size not in holes:
        holes[size] = cv2.resize(mask, size[::-1], interpolation=cv2.INTER_NEAREST) > 127
    buffer = io.BytesIO()
    Image.fromarray(method(image, holes[size]).pixels).save(buffer, format="PNG")
    (out / path.name).write_bytes(buffer.getvalue())
print(len(paths) / (time.perf_counter() - start))
"""
    result = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                            text=True)
    return float(result.stdout.strip().splitlines()[-1])


def small_items(count: int, side: int, method: str) -> dict:
    """`inpaint run` on one worker per core against the plain loop, both in this run."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_small_items(root, count, side)
        workers = os.cpu_count() or 1
        seconds = run_cli(str(root / "images"), str(root / "out"), method, workers,
                          ["--mask", str(root / "mask.png")])
        steady = steady_throughput(root / "out")
        loop = small_loop(root, method)
    pipeline = count / seconds
    return {"items": count, "side": side, "method": method, "workers": workers,
            "pipeline": pipeline, "steady_pipeline": steady, "loop": loop,
            "ratio": pipeline / loop, "steady_ratio": steady / loop,
            "load": os.getloadavg()[0]}


# 1c. Storage that answers slowly ---------------------------------------------------------

def storage_latency(count: int, side: int, method: str, latency: float) -> dict:
    """`inpaint run` over S3 (a loopback moto server) through a proxy, first answering at
    once and then waiting `latency` seconds per request (every read and write), same
    items, same settings: items/s of both."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import s3fs

    from tests.s3server import FaultyProxy, free_port, wait_until_up

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {name: value for name, value in os.environ.items() if name != "AWS_PROFILE"} | {
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1"}
    server = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    proxy = None
    try:
        wait_until_up(endpoint, server)
        proxy = FaultyProxy(endpoint)
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="bench", secret="bench",
                               skip_instance_cache=True)
        fs.mkdir("bench")
        workers, runs = os.cpu_count() or 1, {}
        with tempfile.TemporaryDirectory() as folder:
            write_small_items(Path(folder), count, side, masks=True)
            fs.put(f"{folder}/images/", "bench/images/", recursive=True)
            fs.put(f"{folder}/masks/", "bench/masks/", recursive=True)
            for name, wait in (("no latency", 0.0), (f"{latency * 1000:.0f} ms", latency)):
                proxy.latency = wait
                manifest_dir = Path(folder) / f"manifest-{len(runs)}"
                seconds = run_cli("s3://bench/images", f"s3://bench/out-{len(runs)}", method,
                                  workers, ["--masks", "s3://bench/masks", "--manifest",
                                            str(manifest_dir)],
                                  env | {"AWS_ENDPOINT_URL": proxy.endpoint})
                runs[name] = {"items_per_s": count / seconds,
                              "steady": steady_throughput(manifest_dir, manifest_uri=True)}
    finally:
        if proxy is not None:
            proxy.close()
        server.terminate()
        server.wait(timeout=10)
    plain, slow = runs.values()
    return {"items": count, "side": side, "method": method, "latency_s": latency,
            "workers": workers, "runs": runs,
            "ratio": slow["items_per_s"] / plain["items_per_s"],
            "steady_ratio": slow["steady"] / plain["steady"], "load": os.getloadavg()[0]}


# 2. Cost follows the damage -----------------------------------------------------------

def fixed_hole(size: int) -> np.ndarray:
    """A 64x64 blob and a 200-px scratch, the same wherever the canvas grows."""
    import cv2

    hole = np.zeros((size, size), np.uint8)
    center = size // 2
    cv2.ellipse(hole, (center - 100, center), (32, 32), 0, 0, 360, 255, -1)
    cv2.line(hole, (center + 20, center - 100), (center + 60, center + 100), 255, 2)
    return hole > 0


def canvas(size: int) -> np.ndarray:
    base = photo("astronaut", 512)
    reps = -(-size // 512)
    return np.ascontiguousarray(np.tile(base, (reps, reps, 1))[:size, :size])


def cost_by_canvas(method: str, sizes: list[int], repeats: int) -> dict:
    import io

    from pipeline import imageio, load_method

    filler = load_method(method)
    rows = {}
    for size in sizes:
        pixels, hole = canvas(size), fixed_hole(size)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        encoded = buffer.getvalue()
        decoded = imageio.decode(encoded, 10**9)
        decode = median_seconds(lambda e=encoded: imageio.decode(e, 10**9), repeats)
        fill = median_seconds(lambda p=pixels, h=hole: filler(p, h), repeats)
        encode = median_seconds(lambda d=decoded: imageio.encode(d, d.pixels), repeats)
        rows[size] = {"decode": decode, "fill": fill, "encode": encode,
                      "total": decode + fill + encode}
    smallest, largest = min(sizes), max(sizes)
    return {"sizes": rows,
            "fill_ratio": rows[largest]["fill"] / rows[smallest]["fill"],
            "total_ratio": rows[largest]["total"] / rows[smallest]["total"]}


# 3. Optimizer overhead ----------------------------------------------------------------

def round_hole_crop(size: int):
    """A `size`² crop of a real photo with one round hole, and the default method's terms."""
    import cv2

    from pipeline import load_method
    from pipeline.optimizer import Schedule

    method = load_method("hallucinate")
    image = photo("chelsea", 2 * size)[:size, :size].astype(np.float32) / 255
    hole = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(hole, (image.shape[1] // 2, image.shape[0] // 2), size // 6, 1, -1)
    radius = float(size // 6)
    return method, image, hole > 0, radius, method.term_weights(radius), Schedule


def optimizer_overhead(size: int, steps: int) -> dict:
    """Seconds per step of the default optimizer on one crop against the bare network work
    of a step (forward+backward through the feature taps it uses), and against a
    forward+backward through the whole network, on the same batch."""
    import torch

    from pipeline.optimizer import optimize

    torch.set_num_threads(os.cpu_count() or 1)
    method, image, hole, radius, weights, Schedule = round_hole_crop(size)  # noqa: N806
    prior, params = method.prior, method.params
    never_plateau = Schedule(steps=steps, lr=params.lr, octaves=1, finest=0,
                             patience=10**6, tolerance=0.0)
    optimize(image, hole, prior, weights, never_plateau)  # warm-up
    step = median_seconds(lambda: optimize(image, hole, prior, weights, never_plateau),
                          3) / steps
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()

    def taps_pass():
        x = batch.clone().requires_grad_(True)
        sum(f.square().mean() for f in prior.features(prior.normalize(x),
                                                       weights.context_depth)).backward()

    def whole_pass():
        x = batch.clone().requires_grad_(True)
        prior.logits(prior.normalize(x)).logsumexp(1).sum().backward()

    taps_pass(), whole_pass()
    taps = median_seconds(lambda: [taps_pass() for _ in range(steps)], 3) / steps
    whole = median_seconds(lambda: [whole_pass() for _ in range(steps)], 3) / steps
    return {"crop": f"{image.shape[1]}x{image.shape[0]}, one round hole of radius {radius:.0f}",
            "model": prior.name, "feature_taps": weights.context_depth,
            "optimizer_step_s": step, "bare_taps_forward_backward_s": taps,
            "bare_whole_network_forward_backward_s": whole,
            "iterations_per_s": 1 / step,
            "overhead_vs_taps": step / taps - 1, "overhead_vs_whole_network": step / whole - 1}


# 4. Throughput by method --------------------------------------------------------------

def throughput_by_method(methods: list[str], count: int, long_side: int) -> dict:
    from pipeline import load_method, method_names

    items = []
    for index in range(count):
        image = photo(PHOTOS[index % len(PHOTOS)], long_side)
        items.append((image, synthetic_mask("strokes", *image.shape[:2], seed=index)))
    rates = {}
    for name in methods:
        if name not in method_names():
            rates[name] = None
            continue
        method = load_method(name)
        start = time.perf_counter()
        for image, hole in items:
            method(image, hole)
        rates[name] = count / (time.perf_counter() - start)
    return rates


# 5. Peak memory -----------------------------------------------------------------------

def peak_memory(method: str, megapixels: int) -> dict:
    """Peak RSS of one fresh process restoring a 16-bit scan with scratches, measured by
    `benchmarks/big_scan_memory.py` (the scan is built in another process)."""
    script = Path(__file__).with_name("big_scan_memory.py")
    result = subprocess.run([sys.executable, str(script), "--method", method, "--megapixels",
                             str(megapixels)], check=True, capture_output=True, text=True)
    figures = json.loads(result.stdout[result.stdout.index("{"):])
    return {"megapixels": round(figures["megapixels"], 1), "method": method,
            "status": figures["status"], "peak_mb": figures["peak_rss_mb"],
            "before_item_mb": figures["rss_after_imports_mb"]}


# 6. Batched crops ----------------------------------------------------------------------

def batched_crops(size: int, crops: int, steps: int) -> dict:
    """Crops per second of the default optimizer at batch sizes 1, 2, 4, ... `crops` (crops
    of one bucket sharing each forward pass, what `batch_pixels` does across a Ray batch's
    photos), on the CPU and, where there is one, on the GPU."""
    import torch

    from pipeline.optimizer import optimize_batch

    method, image, hole, _, weights, Schedule = round_hole_crop(size)  # noqa: N806
    schedule = Schedule(steps=steps, lr=method.params.lr, octaves=1, finest=0,
                        patience=10**6, tolerance=0.0)
    sizes = [2**power for power in range(crops.bit_length()) if 2**power <= crops]
    rows = {}
    for device in ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]:
        prior = method.prior.to(device)

        def run(batch: int, device=device, prior=prior):
            for _ in range(crops // batch):
                optimize_batch([image] * batch, [hole] * batch, prior, weights, schedule,
                               device=device)
            if device == "cuda":
                torch.cuda.synchronize()

        run(1)  # warm-up
        name = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({os.cpu_count()})"
        rows[name] = {batch: crops / median_seconds(lambda b=batch: run(b), 3)
                      for batch in sizes}
    method.prior.to("cpu")
    return {"crop": f"{size}x{size}", "crops": crops, "steps_per_crop": steps, "devices": rows,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def write_results(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "speed.md").write_text(render_markdown(results))
    draw_chart(results, out / "speed.png")


def render_markdown(results: dict) -> str:
    m = results["machine"]
    lines = ["# Speed", "", f"Measured {results['date']} on {m['cpu']}, {m['cores']} cores, "
             f"GPU: {m['gpu']}; torch {m['torch']}, ray {m['ray']}, Python {m['python']}. "
             "Ratios come from one run; figures are medians.", ""]
    eff = results["pipeline_efficiency"]
    lines += ["## 1. Pipeline efficiency (target: pipeline/loop >= 0.9)", "",
              f"{eff['items']} items, {eff['long_side']}-px photos, `strokes` masks, "
              f"`{eff['method']}`, items/s (`inpaint run` includes Ray start-up):", "",
              "| configuration | items/s |", "|---|---|"]
    lines += [f"| pipeline, {k} | {v:.3f} |" for k, v in eff["pipeline"].items()]
    lines += [f"| plain loop, {k} | {v:.3f} |" for k, v in eff["loop"].items()]
    lines += ["", f"**Ratio best pipeline / best loop: {eff['ratio']:.2f}**", ""]
    if "steady_ratio" in eff:
        lines += [f"Without start-up (first item's start to last item's finish, from the "
                  f"manifest): pipeline {eff['steady_pipeline']:.3f} items/s, **ratio "
                  f"{eff['steady_ratio']:.2f}**.", ""]
    lines += small_items_markdown(results.get("small_items"))
    lines += storage_latency_markdown(results.get("storage_latency"))
    cost = results["cost_by_canvas"]
    lines += ["## 2. Cost follows the damage (target: 4096² total <= 1.5 x 512²)", "",
              "Same hole (64x64 blob + 200-px scratch) on growing canvases, JPEG in and out, "
              "seconds:", "", "| canvas | decode | fill | encode | total |",
              "|---|---|---|---|---|"]
    for size, row in cost["sizes"].items():
        lines.append(f"| {size}² | {row['decode']:.3f} | {row['fill']:.3f} | "
                     f"{row['encode']:.3f} | {row['total']:.3f} |")
    lines += ["", f"**Fill ratio largest/smallest: {cost['fill_ratio']:.2f}; total ratio: "
              f"{cost['total_ratio']:.2f}**", ""]
    overhead = results["optimizer_overhead"]
    lines += ["## 3. Optimizer overhead (target: <= 15%)", ""]
    if "skipped" in overhead:
        lines += [overhead["skipped"], ""]
    else:
        lines += [f"Default method on a {overhead['crop']} ({overhead['model']}, "
                  f"{overhead['feature_taps']} feature taps), seconds per step:", "",
                  "| what | s/step |", "|---|---|",
                  f"| optimizer step (all terms, Adam, clamping) | "
                  f"{overhead['optimizer_step_s']:.4f} |",
                  f"| bare forward+backward through the taps it uses | "
                  f"{overhead['bare_taps_forward_backward_s']:.4f} |",
                  f"| bare forward+backward through the whole network | "
                  f"{overhead['bare_whole_network_forward_backward_s']:.4f} |", "",
                  f"**{overhead['iterations_per_s']:.1f} iterations/s; overhead vs the taps' "
                  f"bare pass: {overhead['overhead_vs_taps']:+.0%}; vs the whole network: "
                  f"{overhead['overhead_vs_whole_network']:+.0%}**", ""]
    lines += ["## 4. Throughput by method", "", "| method | images/s |", "|---|---|"]
    for name, rate in results["throughput"].items():
        lines.append(f"| {name} | {'not registered' if rate is None else f'{rate:.3f}'} |")
    memory = results["peak_memory"]
    lines += ["", "## 5. Peak memory of one worker (target: < 2 GB)", "",
              f"{memory['megapixels']}-MP 16-bit RGB TIFF (LZW) with six long 2-5 px scratches, "
              f"`{memory['method']}`: status {memory['status']}, **peak RSS "
              f"{memory['peak_mb']:.0f} MB** ({memory['before_item_mb']:.0f} MB before the "
              "item, after imports).", ""]
    batched = results["batched_crops"]
    sizes = list(next(iter(batched["devices"].values())))
    lines += ["## 6. Crops per second by batch size (crops of one bucket per forward pass)", "",
              f"{batched['crops']} crops of {batched['crop']}, {batched['steps_per_crop']} "
              f"steps each, default terms (measured {batched['date']}):", "",
              "| device | " + " | ".join(f"batch {size}" for size in sizes) + " |",
              "|---|" + "---|" * len(sizes)]
    for device, rates in batched["devices"].items():
        lines.append(f"| {device} | " + " | ".join(f"{rates[size]:.2f}" for size in sizes)
                     + " |")
    lines.append("")
    notes = results.get("notes")
    if notes:
        lines += ["## Notes", "", notes, ""]
    return "\n".join(lines)


def small_items_markdown(small: dict | None) -> list[str]:
    if not small:
        return []
    return ["## 1b. Small items at loop speed (target: pipeline/loop >= 1.0, aim 1.6)", "",
            f"{small['items']:,} {small['side']}-px PNGs, one `--mask` resized to each, "
            f"`{small['method']}`; `inpaint run` on {small['workers']} workers (Ray's "
            "start-up included) against a plain single-process loop doing the same read, "
            f"fill, encode and write; 1-minute load average {small['load']:.1f} at the end:",
            "", "| configuration | items/s |", "|---|---|",
            f"| pipeline, {small['workers']} workers | {small['pipeline']:.1f} |",
            f"| pipeline without start-up (manifest) | {small['steady_pipeline']:.1f} |",
            f"| plain loop, 1 process | {small['loop']:.1f} |", "",
            f"**Ratio pipeline / loop: {small['ratio']:.2f}** (without start-up: "
            f"{small['steady_ratio']:.2f})", ""]


def storage_latency_markdown(slow: dict | None) -> list[str]:
    if not slow:
        return []
    lines = ["## 1c. Storage that answers slowly (target: within 20% of no latency)", "",
             f"{slow['items']:,} {slow['side']}-px PNGs with a mask each on S3 (a loopback "
             f"moto server behind a proxy that waits {slow['latency_s'] * 1000:.0f} ms "
             "before answering each request: every read, write and listing), "
             f"`{slow['method']}`, {slow['workers']} workers, the same run once without the "
             f"wait; 1-minute load average {slow['load']:.1f} at the end:", "",
             "| storage | items/s (start-up included) | items/s without start-up |",
             "|---|---|---|"]
    lines += [f"| {name} | {run['items_per_s']:.1f} | {run['steady']:.1f} |"
              for name, run in slow["runs"].items()]
    return lines + ["", f"**With latency / without: {slow['ratio']:.2f}** (without start-up: "
                    f"{slow['steady_ratio']:.2f})", ""]


def draw_chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    cost = results["cost_by_canvas"]["sizes"]
    sizes = list(cost)
    bottom = np.zeros(len(sizes))
    for part in ("decode", "fill", "encode"):
        values = np.array([cost[s][part] for s in sizes])
        left.bar([f"{s}²" for s in sizes], values, bottom=bottom, label=part)
        bottom += values
    left.set_title("Same hole, growing canvas")
    left.set_ylabel("seconds")
    left.legend()
    rates = {k: v for k, v in results["throughput"].items() if v}
    right.barh(list(rates), list(rates.values()))
    right.set_xscale("log")
    right.set_title("Throughput by method (images/s, log)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--out", default="benchmarks/results", help="results folder")
    parser.add_argument("--method", default="hallucinate", help="the method under test")
    parser.add_argument("--only", nargs="+", help="rerun these parts, keep the others (and "
                        "the notes) from the results folder's speed.json")
    args = parser.parse_args()
    quick = args.quick
    results = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "quick": quick}
    if args.only:
        kept = json.loads((Path(args.out) / "speed.json").read_text())
        results = kept | {"machine": machine()}
    steps = [
        ("pipeline_efficiency", lambda: pipeline_efficiency(
            args.method, 4 if quick else 24, 96 if quick else 384, quick)),
        ("small_items", lambda: small_items(40 if quick else 20_000, 64, "telea")),
        ("storage_latency", lambda: storage_latency(12 if quick else 1_000, 64, "telea",
                                                    0.05)),
        ("cost_by_canvas", lambda: cost_by_canvas(
            args.method, [256, 512] if quick else [512, 2048, 4096], 1 if quick else 3)),
        ("optimizer_overhead", lambda: optimizer_overhead(64 if quick else 256,
                                                          3 if quick else 20)),
        ("throughput", lambda: throughput_by_method(
            list(METHODS), 2 if quick else 4, 96 if quick else 384)),
        ("peak_memory", lambda: peak_memory(args.method, 1 if quick else 40)),
        ("batched_crops", lambda: batched_crops(64 if quick else 128, 2 if quick else 8,
                                                3 if quick else 10)),
    ]
    for name, step in steps:
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        results[name] = step()
        print(f"{name}: {time.perf_counter() - start:.1f}s", file=sys.stderr)
    write_results(results, Path(args.out))
    print(render_markdown(results))


if __name__ == "__main__":
    main()
