"""A dataset run's work: one part per task, its rows restored by the same per-item code as
loose files, its output part written whole; and reading one row back for the report.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline import manifest, storage
from pipeline.datasets import KEY_SEPARATOR, format_module, format_of, key_of, part_of
from pipeline.discover import Item
from pipeline.settings import RunSettings

log = logging.getLogger(__name__)


@dataclass
class PartTask:
    """One part's work: the items to restore, and those done before (carried over)."""

    uri: str
    out_uri: str
    todo: list[Item] = field(default_factory=list)
    done: list[Item] = field(default_factory=list)


def part_tasks(items: Iterable[tuple[Item, bool]]) -> Iterator[PartTask]:
    """One task per part that has something to do, in plan order; `items` come with
    whether resume skips them (pipeline.plans.marked). A plan holds a part's rows
    together (part, then row order), so one part's items are held at a time."""
    task = None
    for item, done in items:
        uri = part_of(item.image_uri)
        if task is None or task.uri != uri:
            if task is not None and task.todo:
                yield task
            task = PartTask(uri, part_of(item.output_uri))
        (task.done if done else task.todo).append(item)
    if task is not None and task.todo:
        yield task


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
        storage.write_uri(task.out_uri, part, settings.storage_options, settings.run_id)
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
            return self.marked(restore_part(task, self.context))

    return PartRestorer


def restore_in_process(items: Iterable[tuple[Item, bool]], context) -> list[dict]:
    """`pipeline.restore_items` for a dataset: every part's work, in this process."""
    context.keep_outputs = True
    return [row for task in part_tasks(items) for row in restore_part(task, context)]


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
