"""`inpaint report`: a static page (index.html, charts, thumbnails) built from the manifest.

Aggregates run in Arrow compute over narrow columns, wide columns are streamed or read for
the sampled rows only, and only the sample's images are opened, so a 100,000-row manifest
reports in seconds and in bounded memory. Every user string reaches HTML through Jinja2's
autoescaping; every link is URL-quoted.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import posixpath
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import cv2
import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from PIL import Image, ImageOps

from pipeline import imageio, manifest, storage
from pipeline.settings import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)

THUMB_SIDE = 256
FIRST_PATHS = 5
THUMB_THREADS = 4
# Narrow columns: every aggregate of every run is computed from these alone.
FACT_COLUMNS = ["run_id", "item_id", "status", "method", "error_kind", "seconds",
                "hole_fraction", "width", "height", "input_bytes", "output_bytes", "worker",
                "device", "started_at", "finished_at"]
SAMPLE_COLUMNS = ["item_id", "relative_path", "image_uri", "mask_uri", "output_uri",
                  "hole_fraction", "seconds", "width", "height", "params"]
OUTLINE_RGBA = (255, 40, 40, 255)
HOLE_TINT_RGBA = (255, 40, 40, 70)


class ReportError(ValueError):
    """The report cannot be built as asked (no manifest rows, unknown run); says why."""


def default_out(manifest_uri: str) -> str:
    """The manifest's sibling `_report` folder (OUT/_manifest -> OUT/_report)."""
    parent = posixpath.dirname(manifest_uri.rstrip("/"))
    if not parent or parent.endswith("://"):
        return (parent or "") + "_report"
    return parent + "/_report"


def build(manifest_uri: str, out_uri: str, run_id: str | None = None,
          storage_options: dict | None = None, sample: int = 48) -> str:
    """Write OUT_URI/index.html (plus charts and thumbnails) for one run; return its URI.

    The run is `run_id`, or the latest run of the manifest (the one that finished last).
    """
    facts = manifest.read(manifest_uri, storage_options, FACT_COLUMNS)
    if facts.num_rows == 0:
        raise ReportError(f"no manifest rows found at {manifest_uri}")
    history = run_history(facts)
    chosen = run_id or history[-1]["run_id"]
    if chosen not in {run["run_id"] for run in history}:
        known = ", ".join(run["run_id"] for run in history)
        raise ReportError(f"run {chosen!r} is not in {manifest_uri} (runs: {known})")
    rows = facts.filter(pc.equal(facts["run_id"], chosen))
    dataset = manifest.dataset(manifest_uri, storage_options)
    run_filter = pads.field("run_id") == chosen
    out_fs, out_path = storage.filesystem(out_uri, storage_options)
    out_path = out_path.rstrip("/")
    picks = choose_sample(rows, sample, seed=chosen)
    context = {
        "run": summarize(rows, _distinct_params(dataset, run_filter)),
        "history": history,
        "chosen": chosen,
        "manifest_uri": manifest_uri,
        "problems": group_problems(dataset, run_filter),
        "charts": write_charts(facts, rows, out_fs, out_path),
        "gallery": write_gallery(dataset, run_filter, picks, out_fs, out_path, storage_options),
        "sample_size": sample,
        "generated": _when(datetime.now(UTC)),
    }
    index = out_path + "/index.html"
    storage.write_atomic(out_fs, index, render(context).encode())
    return storage.full_uri(out_fs, index)


# --- aggregates ---------------------------------------------------------------------------

def run_history(facts: pa.Table) -> list[dict[str, Any]]:
    """One dict per run (id, start, end, methods, counts by status, items/s), oldest first."""
    spans = facts.group_by("run_id").aggregate(
        [("started_at", "min"), ("finished_at", "max"), ("item_id", "count"),
         ("method", "distinct")]
    ).to_pylist()
    by_status = facts.group_by(["run_id", "status"]).aggregate([("item_id", "count")])
    counts: dict[str, dict[str, int]] = {}
    for entry in by_status.to_pylist():
        counts.setdefault(entry["run_id"], {})[entry["status"] or "unknown"] = entry[
            "item_id_count"]
    history = []
    for span in spans:
        start, end = span["started_at_min"], span["finished_at_max"]
        total = span["item_id_count"]
        history.append({
            "run_id": span["run_id"],
            "start": _when(start),
            "end": _when(end),
            "end_key": end or datetime.min.replace(tzinfo=UTC),
            "methods": ", ".join(sorted(m for m in span["method_distinct"] if m)),
            "counts": counts.get(span["run_id"], {}),
            "total": total,
            "items_per_second": _rate(total, start, end),
        })
    return sorted(history, key=lambda run: (run["end_key"], run["run_id"]))


def summarize(rows: pa.Table, params: list[str]) -> dict[str, Any]:
    """The chosen run's figures: span, counts, throughput, timing, workers, devices, bytes."""
    start, end = pc.min(rows["started_at"]).as_py(), pc.max(rows["finished_at"]).as_py()
    ok = rows.filter(pc.equal(rows["status"], "ok"))
    seconds = ok["seconds"].drop_null()
    median = p95 = slowest = None
    if len(seconds):
        median, p95 = pc.quantile(seconds, q=[0.5, 0.95]).to_pylist()
        slowest = pc.max(seconds).as_py()
    return {
        "start": _when(start),
        "end": _when(end),
        "wall_seconds": (end - start).total_seconds() if start and end else None,
        "total": rows.num_rows,
        "counts": _value_counts(rows["status"]),
        "methods": _value_counts(rows["method"]),
        "params": [_flat_params(text) for text in params],
        "items_per_second": _rate(rows.num_rows, start, end),
        "median_seconds": median,
        "p95_seconds": p95,
        "max_seconds": slowest,
        "workers": _value_counts(rows["worker"]),
        "devices": _value_counts(rows["device"]),
        "input_bytes": pc.sum(rows["input_bytes"]).as_py() or 0,
        "output_bytes": pc.sum(rows["output_bytes"]).as_py() or 0,
    }


def _value_counts(column: pa.ChunkedArray) -> dict[str, int]:
    pairs = pc.value_counts(column.fill_null("unknown")).to_pylist()
    return dict(sorted(((p["values"], p["counts"]) for p in pairs), key=lambda kv: -kv[1]))


def _distinct_params(dataset: pads.Dataset, run_filter) -> list[str]:
    """The run's distinct params JSON, streamed batch by batch (the column is wide)."""
    seen: set[str] = set()
    for batch in dataset.to_batches(columns=["params"], filter=run_filter):
        seen.update(v for v in pc.unique(batch.column(0)).to_pylist() if v)
    return sorted(seen)


def group_problems(dataset: pads.Dataset, run_filter) -> dict[str, list[dict[str, Any]]]:
    """Failed rows grouped by error kind, skipped rows by reason: count and first paths.

    Streamed, so a run where everything failed costs one batch of memory, not the run.
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    not_ok = run_filter & pads.field("status").isin(["failed", "skipped"])
    columns = ["status", "error_kind", "error", "relative_path"]
    for batch in dataset.to_batches(columns=columns, filter=not_ok):
        for row in batch.to_pylist():
            failed = row["status"] == "failed"
            key = (row["status"], (row["error_kind"] or "unknown") if failed
                   else (row["error"] or "no reason recorded"))
            group = groups.setdefault(key, {"name": key[1], "count": 0, "first": []})
            group["count"] += 1
            if len(group["first"]) < FIRST_PATHS:
                group["first"].append({"path": row["relative_path"], "error": row["error"]})
    ordered = sorted(groups.items(), key=lambda kv: -kv[1]["count"])
    return {status: [g for (s, _), g in ordered if s == status] for status in ("failed",
                                                                               "skipped")}


def _rate(count: int, start: datetime | None, end: datetime | None) -> float | None:
    if not start or not end or end <= start:
        return None
    return count / (end - start).total_seconds()


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _flat_params(text: str) -> list[tuple[str, str]]:
    """Params JSON as sorted `(dotted.key, JSON value)` pairs, easier to scan than JSON."""
    try:
        params = json.loads(text)
    except (TypeError, ValueError):
        return [("params", text)]

    def walk(value: Any, prefix: str) -> list[tuple[str, str]]:
        if isinstance(value, dict) and value:
            return [pair for key in sorted(value) for pair in
                    walk(value[key], f"{prefix}.{key}" if prefix else str(key))]
        return [(prefix or "params", json.dumps(value))]

    return walk(params, "")


def hole_megapixels(rows: pa.Table) -> pa.ChunkedArray:
    """Hole size in megapixels: hole fraction x width x height / 1e6."""
    area = pc.multiply(pc.cast(rows["width"], pa.float64()), pc.cast(rows["height"],
                                                                     pa.float64()))
    return pc.divide(pc.multiply(rows["hole_fraction"], area), 1e6)


# --- sample -------------------------------------------------------------------------------

def choose_sample(rows: pa.Table, size: int, seed: str) -> dict[str, list[str]]:
    """`{item_id: [why chosen]}` among restored items: largest holes, slowest, then random.

    The worst-looking items teach the most, so a third of the sample are the largest
    holes and a third the slowest items; the rest are drawn at random (seeded by the run).
    """
    ok = rows.filter(pc.equal(rows["status"], "ok"))
    if size <= 0 or ok.num_rows == 0:
        return {}
    ids = ok["item_id"]
    if ok.num_rows <= size:  # everything fits: no need to say why each was chosen
        order = pc.sort_indices(pa.table({"v": hole_megapixels(ok).fill_null(-1.0)}),
                                [("v", "descending")])
        return {ids[index].as_py(): [] for index in order.to_pylist()}
    picks: dict[str, list[str]] = {}
    share = math.ceil(size / 3)
    for reason, values in (("largest hole", hole_megapixels(ok)), ("slowest", ok["seconds"])):
        order = pc.select_k_unstable(pa.table({"v": values.fill_null(-1.0)}), share,
                                     [("v", "descending")])
        for index in order.to_pylist():
            item_id = ids[index].as_py()
            if item_id in picks or len(picks) < size:
                picks.setdefault(item_id, []).append(reason)
    rest = max(0, size - len(picks))
    if rest:
        remaining = pc.invert(pc.is_in(ids, value_set=pa.array(list(picks), pa.string())))
        pool = pc.filter(ids, remaining)
        chosen = random.Random(seed).sample(range(len(pool)), min(rest, len(pool)))
        for index in sorted(chosen):
            picks[pool[index].as_py()] = ["random"]
    return picks


# --- gallery ------------------------------------------------------------------------------

def write_gallery(dataset: pads.Dataset, run_filter, picks: dict[str, list[str]], out_fs,
                  out_path: str, storage_options: dict | None) -> list[dict[str, Any]]:
    """Thumbnails of the sampled items, a few at a time; one entry per item, in pick order."""
    if not picks:
        return []
    wanted = run_filter & pads.field("item_id").isin(list(picks))
    rows = {row["item_id"]: row for row in
            dataset.to_table(columns=SAMPLE_COLUMNS, filter=wanted).to_pylist()}

    def one(item_id: str) -> dict[str, Any]:
        row = rows[item_id]
        entry = _gallery_entry(row, out_fs, out_path, storage_options)
        return entry | {"reasons": picks[item_id]}

    with ThreadPoolExecutor(THUMB_THREADS) as pool:
        return list(pool.map(one, [item_id for item_id in picks if item_id in rows]))


def _gallery_entry(row: dict[str, Any], out_fs, out_path: str,
                   storage_options: dict | None) -> dict[str, Any]:
    entry = {"path": row["relative_path"], "hole_fraction": row["hole_fraction"],
             "seconds": row["seconds"], "width": row["width"], "height": row["height"],
             "href": link(row["output_uri"], out_fs, out_path, storage_options),
             "thumbs": None, "problem": None}
    try:
        entry["thumbs"] = write_thumbnails(row, out_fs, out_path, storage_options)
    except Exception as error:  # one unreadable item must not sink the report
        entry["problem"] = f"thumbnail unavailable: {type(error).__name__}: {error}"
        log.warning("report: %s: %s", row["relative_path"], entry["problem"])
    return entry


def write_thumbnails(row: dict[str, Any], out_fs, out_path: str,
                     storage_options: dict | None) -> dict[str, str]:
    """damaged.jpg, outline.png (transparent, hole outlined) and restored.jpg of one item.

    Names are the item id, never the user's file name; paths returned are relative to the
    report folder.
    """
    params = manifest.params_of(row)
    max_pixels = params.get("max_pixels") or DEFAULT_MAX_PIXELS
    damaged = _load_rgb(row["image_uri"], storage_options, max_pixels, params)
    size = _thumb_size(damaged.size)
    names = {part: f"thumbs/{row['item_id']}-{part}" for part in
             ("damaged.jpg", "outline.png", "restored.jpg")}
    _write_image(out_fs, out_path, names["damaged.jpg"], damaged.resize(size, Image.LANCZOS))
    if row["mask_uri"]:
        holes = _load_holes(row["mask_uri"], storage_options, max_pixels, size,
                            bool(params.get("invert_mask")), params)
        _write_image(out_fs, out_path, names["outline.png"], outline_overlay(holes))
    else:
        names.pop("outline.png")
    restored = _load_rgb(row["output_uri"], storage_options, max_pixels, params)
    _write_image(out_fs, out_path, names["restored.jpg"], restored.resize(size, Image.LANCZOS))
    return {part.split(".")[0]: quote(name) for part, name in names.items()}


def _thumb_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, THUMB_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _open(uri: str, storage_options: dict | None, max_pixels: int,
          params: dict | None = None) -> Image.Image:
    if params and "image_column" in params:  # a dataset's row: PART#KEY (pipeline.datasets)
        from pipeline import datasets

        data = datasets.read_row_bytes(uri, params, storage_options)
    else:
        data = storage.read_uri(uri, storage_options)
    return imageio.open_checked(data, max_pixels)


def _load_rgb(uri: str, storage_options: dict | None, max_pixels: int,
              params: dict | None = None) -> Image.Image:
    """The photo as displayed, at most twice the thumbnail size, 8-bit RGB."""
    image = _open(uri, storage_options, max_pixels, params)
    # JPEG decodes at 1/2, 1/4 or 1/8 scale for free: a 100 MP scan costs a few MP here.
    image.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))
    if image.mode.startswith("I"):
        image = Image.fromarray(_to_gray8(image))
    image.thumbnail((THUMB_SIDE * 2, THUMB_SIDE * 2))
    return ImageOps.exif_transpose(image).convert("RGB")


def _to_gray8(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I"):
        return (np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"))


def _load_holes(uri: str, storage_options: dict | None, max_pixels: int,
                size: tuple[int, int], invert: bool, params: dict | None = None) -> np.ndarray:
    """The mask at thumbnail size, by the masks module's convention (> 127 = hole).

    Area resampling, then any hole at all: one-pixel scratches stay visible when small.
    """
    gray = _to_gray8(ImageOps.exif_transpose(_open(uri, storage_options, max_pixels, params)))
    holes = (gray <= 127) if invert else (gray > 127)
    small = cv2.resize(holes.astype(np.uint8) * 255, size, interpolation=cv2.INTER_AREA)
    return small > 0


def outline_overlay(holes: np.ndarray) -> Image.Image:
    """A transparent RGBA layer: holes tinted and outlined, to lay over the damaged photo."""
    overlay = np.zeros((*holes.shape, 4), np.uint8)
    overlay[holes] = HOLE_TINT_RGBA
    contours, _ = cv2.findContours(holes.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(overlay, contours, -1, OUTLINE_RGBA, thickness=1)
    return Image.fromarray(overlay, "RGBA")


def _write_image(out_fs, out_path: str, name: str, image: Image.Image) -> None:
    buffer = io.BytesIO()
    if name.endswith(".png"):
        image.save(buffer, format="PNG", optimize=True)
    else:
        image.save(buffer, format="JPEG", quality=85)
    storage.write_atomic(out_fs, f"{out_path}/{name}", buffer.getvalue())


def link(target_uri: str | None, out_fs, out_path: str, storage_options: dict | None) -> str:
    """A URL-quoted link to TARGET from the report folder: relative when they share a store
    (so the report works from disk and from static hosting), the full URI otherwise."""
    if not target_uri:
        return ""
    fs, path = storage.filesystem(target_uri, storage_options)
    if fs.protocol == out_fs.protocol:
        relative = posixpath.relpath(path, out_path)
        return quote(relative.replace(os.sep, "/"))
    return quote(storage.full_uri(fs, path), safe=":/")


# --- charts and page ----------------------------------------------------------------------

def write_charts(facts: pa.Table, rows: pa.Table, out_fs, out_path: str) -> dict[str, str]:
    """seconds.png (every run's restored items, coloured by method) and holes.png."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    charts = {}
    restored = facts.filter(pc.equal(facts["status"], "ok"))
    if restored.num_rows:
        figure = Figure(figsize=(5.2, 3.4), layout="constrained")
        axes = figure.subplots()
        sizes, seconds = hole_megapixels(restored), restored["seconds"]
        methods = restored["method"].fill_null("unknown")
        for method in sorted(pc.unique(methods).to_pylist()):
            chosen = pc.equal(methods, method)
            axes.scatter(pc.filter(sizes, chosen).to_numpy(zero_copy_only=False),
                         pc.filter(seconds, chosen).to_numpy(zero_copy_only=False),
                         s=6 if restored.num_rows > 2000 else 24, alpha=0.6, label=method,
                         rasterized=True)
        axes.set(xlabel="hole size (megapixels)", ylabel="seconds per item")
        fastest, slowest = pc.min(seconds).as_py() or 0, pc.max(seconds).as_py() or 0
        if fastest > 0 and slowest / fastest > 100:  # methods of very different speeds
            axes.set_yscale("log")
        axes.legend(title="method", markerscale=2 if restored.num_rows > 2000 else 1)
        charts["seconds"] = _save_chart(figure, out_fs, out_path, "seconds.png")
    fractions = rows["hole_fraction"].drop_null()
    if len(fractions):
        figure = Figure(figsize=(5.2, 3.4), layout="constrained")
        axes = figure.subplots()
        axes.hist(fractions.to_numpy(zero_copy_only=False), bins=40, color="#4a6fa5")
        axes.set(xlabel="hole fraction (share of the photo to fill)", ylabel="items")
        charts["holes"] = _save_chart(figure, out_fs, out_path, "holes.png")
    return charts


def _save_chart(figure, out_fs, out_path: str, name: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    storage.write_atomic(out_fs, f"{out_path}/{name}", buffer.getvalue())
    return name


def render(context: dict[str, Any]) -> str:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["size"] = human_bytes
    environment.filters["num"] = lambda value, digits=2: (
        "-" if value is None else f"{value:,.{digits}f}")
    return environment.get_template("report.html").render(**context)


def human_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} PB"
