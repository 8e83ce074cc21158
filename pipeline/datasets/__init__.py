"""Datasets in, datasets out: Parquet parts and WebDataset tar shards as IMAGES.

A dataset's part (a Parquet file, a tar shard) is its unit of work and of output: the
driver lists the parts and reads their keys only (a key column, tar headers; never the
images), so planning, `--dry-run`, `--limit` and resume see one item per row as for loose
files. A worker is given one part with its items: it reads the part, restores the items
through the same per-item code as loose files (`pipeline.worker.restore_batch`, the bytes
carried in the item), and writes the output part whole under the same name in OUT, in one
atomic write. Items an earlier run finished are carried over from the output part that
run wrote, so a rerun redoes nothing that is done; a failed item is absent from the
output part and a `failed` row in the manifest.

Manifest rows name an item `PART#KEY` (`image_uri`, `output_uri`, `relative_path`); the
item id is the hash of that relative name, so reruns agree.
"""

from __future__ import annotations

from pipeline.discover import Item
from pipeline.settings import RunSettings

SUFFIXES = {"parquet": ".parquet", "webdataset": ".tar"}
# Separates a part's URI from an item's key in the manifest's URIs; part names may not hold it.
KEY_SEPARATOR = "#"
# `images` of the settings `restore_dataset` makes: rows come from a Ray Data dataset.
RAY_DATASET = "<ray.data.Dataset>"


def format_of(settings: RunSettings) -> str:
    """'files', 'parquet', 'webdataset', or 'ray' (rows of a Ray Data dataset).

    `--input-format auto` decides from the URI alone: a path (file, folder, glob or brace
    pattern) ending in `.parquet` is Parquet, one ending in `.tar` is WebDataset.
    """
    if settings.images == RAY_DATASET:
        return "ray"
    if settings.input_format != "auto":
        return settings.input_format
    name = settings.images.rstrip("/").lower()
    for kind, suffix in SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    return "files"


def format_module(kind: str):
    from pipeline.datasets import parquet, webdataset

    return {"parquet": parquet, "webdataset": webdataset}[kind]

def key_of(item: Item) -> str:
    return item.image_uri.partition(KEY_SEPARATOR)[2]


def part_of(uri: str) -> str:
    return uri.partition(KEY_SEPARATOR)[0]

# The modules below import the names above.
from pipeline.datasets.plan import expand_braces, find_items, refuse_parts_as_files  # noqa: E402
from pipeline.datasets.raydata import restore_dataset  # noqa: E402
from pipeline.datasets.work import (  # noqa: E402
    part_tasks,
    read_row_bytes,
    restore_in_process,
    restore_part,
    restorer_class,
)

__all__ = ["expand_braces", "find_items", "format_of", "part_tasks", "read_row_bytes",
           "refuse_parts_as_files", "restore_dataset", "restore_in_process", "restore_part",
           "restorer_class"]
