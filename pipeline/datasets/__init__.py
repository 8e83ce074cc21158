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

import logging
import posixpath
import re
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline import discover, manifest, storage
from pipeline.discover import Item, UsageError
from pipeline.settings import RunSettings

log = logging.getLogger(__name__)

SUFFIXES = {"parquet": ".parquet", "webdataset": ".tar"}
# Separates a part's URI from an item's key in the manifest's URIs; part names may not hold it.
KEY_SEPARATOR = "#"
# `images` of the settings `restore_dataset` makes: rows come from a Ray Data dataset.
RAY_DATASET = "<ray.data.Dataset>"
_BRACE = re.compile(r"\{([^{}]*)\}")
_PATTERN_CHARS = "*?[{"


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


@dataclass(frozen=True)
class Part:
    """One input part and where its output part goes."""

    uri: str
    out_uri: str
    relative_path: str
    info: dict  # the part's listing facts (size, ETag or mtime): its rows' fingerprint


def expand_braces(pattern: str) -> list[str]:
    """WebDataset's shard patterns: `{000..009}` (zero-padded ranges) and `{a,b}` lists."""
    found = _BRACE.search(pattern)
    if not found:
        return [pattern]
    body, head, tail = found.group(1), pattern[:found.start()], pattern[found.end():]
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if span:
        first, last = span.groups()
        width = len(first) if first.startswith("0") else 0
        choices = [str(n).zfill(width) for n in range(int(first), int(last) + 1)]
    else:
        choices = body.split(",")
    return [name for choice in choices for name in expand_braces(head + choice + tail)]


def list_parts(settings: RunSettings) -> tuple[str, list[Part]]:
    """The dataset's root folder and its parts (sorted by name), from listings alone."""
    kind = format_of(settings)
    suffix = SUFFIXES[kind]
    fs, path = storage.filesystem(settings.images, settings.storage_options)
    patterns = expand_braces(path)
    found: dict[str, dict] = {}
    for pattern in patterns:
        listed = _list_pattern(fs, pattern, suffix, settings.images)
        if not listed and "{" in path and not any(char in pattern for char in "*?["):
            # A shard the brace pattern names is missing: say so, never run on without it.
            raise UsageError(f"IMAGES names a part that is not there: "
                             f"{storage.full_uri(fs, pattern)}")
        found |= listed
    if not found:
        raise UsageError(f"no {suffix} parts found in IMAGES: {settings.images}")
    root = _root_of(fs, path, patterns)
    parts = []
    for name in sorted(found):
        relative = posixpath.relpath(name, root) if root else name
        part = Part(storage.full_uri(fs, name), storage.join(settings.out, relative), relative,
                    found[name])
        # The manifest's URIs are PART#KEY: the first separator must be the one we put there.
        if KEY_SEPARATOR in part.uri + part.out_uri:
            raise UsageError(f"a part's path may not contain {KEY_SEPARATOR!r}: {part.uri} "
                             f"-> {part.out_uri}")
        parts.append(part)
    return storage.full_uri(fs, root), parts


def _list_pattern(fs, pattern: str, suffix: str, uri: str) -> dict[str, dict]:
    def wanted(name: str, info: dict) -> bool:
        base = posixpath.basename(name)
        return (info.get("type", "file") == "file" and base.lower().endswith(suffix)
                and not base.startswith((".", "_")))

    try:
        if any(char in pattern for char in "*?["):
            listing = storage.with_retries(lambda: fs.glob(pattern, detail=True), f"list {uri}")
        else:  # a part, or a folder of parts (Spark writes folders named x.parquet)
            listing = storage.with_retries(lambda: fs.find(pattern, detail=True),
                                           f"list {uri}")
    except FileNotFoundError:
        listing = {}
    except (PermissionError, storage.StorageError) as error:
        raise UsageError(f"cannot list {uri}: {error}") from None
    return {name: info for name, info in listing.items() if wanted(name, info)}


def _root_of(fs, path: str, patterns: list[str]) -> str:
    """The folder the output parts' relative names hang from: IMAGES itself when it is a
    folder, else the fixed folders before the first pattern (or the one file's folder)."""
    plain = patterns == [path] and not any(char in path for char in _PATTERN_CHARS)
    if plain and storage.with_retries(lambda: fs.isdir(path), f"stat {path}"):
        return path.rstrip("/")
    fixed = []
    for name in path.rstrip("/").split("/"):
        if any(char in name for char in _PATTERN_CHARS):
            return "/".join(fixed)
        fixed.append(name)
    return posixpath.dirname("/".join(fixed))  # one part file


def refuse_parts_as_files(settings: RunSettings) -> None:
    """A folder IMAGES without photos but with dataset parts is a dataset given without
    `--input-format`: say so, instead of a run that finds nothing and succeeds."""
    fs, path = storage.filesystem(settings.images, settings.storage_options)
    if any(char in path for char in _PATTERN_CHARS):
        return
    for kind, suffix in SUFFIXES.items():
        parts = _list_pattern(fs, path, suffix, settings.images)
        if parts:
            raise UsageError(f"IMAGES holds no photos but {len(parts)} {suffix} part(s): pass "
                             f"--input-format {kind} to restore them as a dataset")


def check_settings(settings: RunSettings) -> None:
    """What a dataset input cannot take, said before any work."""
    if settings.task == "detect":
        raise UsageError("inpaint detect reads loose files only, not Parquet or WebDataset")
    if settings.masks:
        raise UsageError("--masks does not go with a dataset input: masks come from its mask "
                         "column (--mask-column) or --mask FILE")


def find_items(settings: RunSettings) -> list[Item]:
    """Every row of every part as an Item (bytes not read), in part then row order."""
    check_settings(settings)
    root, parts = list_parts(settings)
    # Outputs must never land among the inputs: OUT may not be the parts' folder or below it.
    discover.check_output_location(root, settings.out, settings.storage_options)
    broadcast = (discover.single_mask_info(settings.mask, settings.storage_options)
                 if settings.mask else None)
    module = format_module(format_of(settings))
    items = []
    for part in parts:
        fs, path = storage.filesystem(part.uri, settings.storage_options)
        for entry in module.scan(fs, path, settings):
            items.append(_item(part, entry, settings, broadcast))
    return items


@dataclass(frozen=True)
class Entry:
    """One row of a part as the driver sees it: its key, and its mask's name if any."""

    key: str
    mask_name: str | None = None
    problem: str | None = None


def _item(part: Part, entry: Entry, settings: RunSettings,
          broadcast: tuple[str, dict] | None) -> Item:
    relative = f"{part.relative_path}{KEY_SEPARATOR}{entry.key}"
    problem = entry.problem
    mask_uri, mask_info = None, None
    if broadcast:
        mask_uri, mask_info = broadcast
    elif entry.mask_name:
        mask_uri = f"{part.uri}{KEY_SEPARATOR}{entry.mask_name}"
    else:
        problem = problem or ("no mask given: name the mask column with --mask-column, or "
                              "pass --mask FILE")
    return Item(
        item_id=discover.item_id_for(relative),
        relative_path=relative,
        image_uri=f"{part.uri}{KEY_SEPARATOR}{entry.key}",
        mask_uri=mask_uri,
        # From the listing: a changed part (size, ETag or mtime) redoes all its rows.
        input_fingerprint=discover.fingerprint(part.info, mask_info),
        problem=problem,
        output_uri=f"{part.out_uri}{KEY_SEPARATOR}{entry.key}",
    )


def key_of(item: Item) -> str:
    return item.image_uri.partition(KEY_SEPARATOR)[2]


def part_of(uri: str) -> str:
    return uri.partition(KEY_SEPARATOR)[0]


@dataclass
class PartTask:
    """One part's work: the items to restore, and those done before (carried over)."""

    uri: str
    out_uri: str
    todo: list[Item] = field(default_factory=list)
    done: list[Item] = field(default_factory=list)


def part_tasks(todo: list[Item], already_done: list[Item]) -> list[PartTask]:
    """One task per part that has something to do, in the order of `todo`."""
    tasks: dict[str, PartTask] = {}
    for item in todo:
        uri = part_of(item.image_uri)
        if uri not in tasks:
            tasks[uri] = PartTask(uri, part_of(item.output_uri))
        tasks[uri].todo.append(item)
    for item in already_done:
        task = tasks.get(part_of(item.image_uri))
        if task is not None:
            task.done.append(item)
    return list(tasks.values())


def restore_part(task: PartTask, context) -> list[dict[str, Any]]:
    """Restore one part's items and write its output part; one manifest row per item
    restored now (done items whose output the old part lacks are restored again)."""
    from pipeline.worker import OUTPUT_DATA, restore_batch

    settings = context.settings
    module = format_module(format_of(settings))
    try:
        data = storage.read_uri(task.uri, settings.storage_options)
        samples = module.read_samples(data, settings)
    except Exception as error:  # a missing or unreadable part fails its items, in words
        return [failed_row(item, context, error, task.uri) for item in task.todo]
    old, old_keys = _old_output(task, module, settings)
    carried = {key_of(item) for item in task.done} & old_keys
    work = task.todo + [item for item in task.done if key_of(item) not in carried]
    items = [_with_bytes(item, samples, settings) for item in work]
    rows = restore_batch(items, context)
    outputs = {key_of(item): row.pop(OUTPUT_DATA) for item, row in zip(items, rows, strict=True)
               if OUTPUT_DATA in row}
    try:
        part = module.write_part(data, settings, outputs, old, carried)
        storage.write_uri(task.out_uri, part, settings.storage_options)
    except Exception as error:
        _unwrite(rows, error, task.out_uri)
    return rows


def _old_output(task: PartTask, module, settings: RunSettings) -> tuple[bytes | None, set[str]]:
    """The output part an earlier run wrote, and the keys in it (none when it is gone)."""
    if not task.done:
        return None, set()
    try:
        old = storage.read_uri(task.out_uri, settings.storage_options)
        return old, module.keys_of(old, settings)
    except FileNotFoundError:
        return None, set()
    except Exception as error:  # unreadable: its items are restored again, not lost
        log.warning("cannot read the earlier output part %s (%s): its items are redone",
                    task.out_uri, error)
        return None, set()


def _with_bytes(item: Item, samples: dict[str, tuple[bytes | None, bytes | None]],
                settings: RunSettings) -> Item:
    """The item with its row's bytes; a row without them becomes the item's problem."""
    key = key_of(item)
    if key not in samples:
        return replace(item, problem=f"{key} is no longer in {part_of(item.image_uri)}")
    image, mask = samples[key]
    problem = item.problem
    if image is None:
        problem = problem or f"no image bytes for {key} (null)"
    elif mask is None and item.mask_uri and not settings.mask:
        problem = problem or f"no mask bytes for {key} (null)"
    # b"" for a missing image: the problem stops the item before its bytes are looked at,
    # and the worker never reads an image URI of a dataset's row.
    return replace(item, image_bytes=image or b"", mask_bytes=mask, problem=problem)


def failed_row(item: Item, context, error: BaseException, file: str) -> dict[str, Any]:
    """The row of an item its part's own failure stopped (`file`: the part it concerns)."""
    from datetime import UTC, datetime

    from pipeline.worker import base_row, describe, error_kind

    row = base_row(item, context)
    where = {"image_uri": file, "mask_uri": None}
    return row | {"status": "failed", "error": describe(error, where),
                  "error_kind": error_kind(error), "seconds": 0.0,
                  "finished_at": datetime.now(UTC)}


def _unwrite(rows: list[dict[str, Any]], error: Exception, out_uri: str) -> None:
    """The output part was not written: its items are not done, and the rows say why."""
    from pipeline.worker import REFUSED, describe, error_kind

    if isinstance(error, storage.WriteRefused):
        reason, kind = str(error), REFUSED
    else:
        reason, kind = describe(error, {"image_uri": out_uri, "mask_uri": None}), error_kind(error)
    for row in rows:
        if row["status"] in manifest.DONE_STATUSES:
            row |= {"status": "failed", "error": reason, "error_kind": kind,
                    "output_uri": None}


def restorer_class(settings: RunSettings, params: str) -> type:
    """The Ray actor class of a dataset run: `restore` takes a `PartTask`."""
    from pipeline.worker import restorer_class as item_restorer_class

    class PartRestorer(item_restorer_class(settings, params)):
        def __init__(self):
            super().__init__()
            self.context.keep_outputs = True

        def restore(self, task: PartTask) -> list[dict[str, Any]]:
            return restore_part(task, self.context)

    return PartRestorer


def restore_in_process(todo: list[Item], already_done: list[Item], context) -> list[dict]:
    """`pipeline.restore_items` for a dataset: every part's work, in this process."""
    context.keep_outputs = True
    return [row for task in part_tasks(todo, already_done)
            for row in restore_part(task, context)]


def read_row_bytes(uri: str, params: dict[str, Any], storage_options: dict | None) -> bytes:
    """The bytes a dataset run's manifest URI names, for the report's thumbnails: a row's
    photo (`PART#KEY`, in IMAGES or OUT), its mask (`PART#KEY:COLUMN`, a shard's
    `PART#KEY.mask.png`), or a plain file (`--mask FILE`)."""
    part, separator, name = uri.partition(KEY_SEPARATOR)
    kind = format_of(RunSettings(images=part, out=part))
    if not separator or kind == "files":
        return storage.read_uri(uri, storage_options)
    columns = {field: params.get(field) for field in ("image_column", "mask_column",
                                                      "key_column")}
    settings = RunSettings(images=part, out=part, **columns)
    samples = _part_samples(part, settings.model_dump_json(), storage_options)
    if name in samples:
        return samples[name][0]
    key, _, _ = (name.rpartition(":") if kind == "parquet" else name.partition(".mask."))
    mask = samples[key][1]
    if mask is None:
        raise FileNotFoundError(f"no mask bytes for {uri}")
    return mask


def _part_samples(part: str, settings_json: str, storage_options: dict | None) -> dict:
    """A part's rows, read once for all the report's thumbnails of that part (the gallery
    is a small sample, and a part is read whole): the last few parts are kept."""
    key = (part, settings_json, repr(sorted((storage_options or {}).items())))
    with _CACHE_LOCK:
        if key in _PART_CACHE:
            return _PART_CACHE[key]
    settings = RunSettings.model_validate_json(settings_json)
    samples = format_module(format_of(settings)).read_samples(
        storage.read_uri(part, storage_options), settings)
    with _CACHE_LOCK:
        _PART_CACHE[key] = samples
        while len(_PART_CACHE) > _CACHED_PARTS:
            _PART_CACHE.pop(next(iter(_PART_CACHE)))
    return samples


_CACHED_PARTS = 3
_PART_CACHE: dict[tuple, dict] = {}
_CACHE_LOCK = threading.Lock()

from pipeline.datasets.raydata import restore_dataset  # noqa: E402

__all__ = ["find_items", "format_of", "part_tasks", "restore_dataset", "restore_part",
           "restorer_class"]
