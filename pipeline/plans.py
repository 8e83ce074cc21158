"""A run's plan as Parquet shards: every item found, written as the listing goes and read
back shard by shard as the run's source, so the driver never holds the archive's items.

A plan lives in `OUT/_plan/<run_id>/`: `shard-NNNNNN.parquet` files of `SHARD_ROWS` items
each, written atomically, then `plan.json` last (what the plan was made from, and its
totals), so a plan without `plan.json` is one a killed driver left half-listed. A run
given the same `--run-id` again reuses a complete plan made from the same inputs (no
second listing of a million-photo bucket); a finished run deletes its plan.

Resume is a join, not a Python set: the shards' `item_id + input_fingerprint` keys against
the done keys of the manifest (Arrow strings, `pyarrow.compute.is_in`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from pipeline import storage
from pipeline.discover import Item

log = logging.getLogger(__name__)
COLUMNS = ("item_id", "relative_path", "image_uri", "mask_uri", "input_fingerprint",
           "problem", "output_uri")
SCHEMA = pa.schema([(name, pa.string()) for name in COLUMNS])
# 10,000 items (about 5 MB as Items, well under 1 MB as Parquet) per shard: a shard is
# what the driver holds at once, and 100 shards per million items keep listing them cheap.
SHARD_ROWS = 10_000
FOLDER = "_plan"
PLAN_FILE = "plan.json"
# The settings a plan's items depend on (RunSettings fields).
PLAN_INPUTS = ("images", "masks", "mask", "hand_masks", "out", "task", "limit", "input_format",
               "image_column", "mask_column", "key_column")
# Resume keys as `manifest.done_keys` returns them (or `no_keys`).
Keys = pa.Array | pa.ChunkedArray
# Joins item_id and input_fingerprint into one resume key; neither holds it (hex digests).
KEY_SEPARATOR = "/"


class PlanNotWritten(RuntimeError):
    """A shard or `plan.json` the storage would not take; `str()` says why and where.
    `refused`: for good (full, over quota, read-only, denied), not a failure that passes."""

    def __init__(self, message: str, refused: bool):
        super().__init__(message)
        self.refused = refused


def no_keys() -> pa.Array:
    """The done keys of a run that resumes nothing (`--force`, no manifest yet)."""
    return pa.array([], pa.string())


def made_from(settings) -> str:
    """What decides a plan's items: a plan made from the same reads the same listing."""
    return json.dumps({name: getattr(settings, name) for name in PLAN_INPUTS}, sort_keys=True)


@dataclass(frozen=True)
class Shards:
    """A complete plan: where its shards are, how many, and how many items they hold."""

    uri: str
    storage_options: dict
    count: int
    total: int

    def name(self, index: int) -> str:
        return storage.join(self.uri, shard_file(index))

    def tables(self, columns: list[str] | None = None,
               indexes: Iterable[int] | None = None) -> Iterator[pa.Table]:
        for index in range(self.count) if indexes is None else indexes:
            data = storage.read_uri(self.name(index), self.storage_options)
            yield storage.read_parquet(data, columns)

    def remove(self) -> None:
        fs, path = storage.filesystem(self.uri, self.storage_options)
        if storage.with_retries(lambda: fs.exists(path), f"stat {self.uri}"):
            storage.with_retries(lambda: fs.rm(path, recursive=True), f"remove {self.uri}")


def shard_file(index: int) -> str:
    return f"shard-{index:06d}.parquet"


def write(items: Iterable[Item], uri: str, made_from: str,
          storage_options: dict | None = None, rows: int | None = None) -> Shards:
    """Write `items` as shards of `rows` items under `uri`, then `plan.json`.

    `made_from` names what the plan was made from (`reuse` compares it). What an earlier,
    unfinished plan left there is removed first.
    """
    options = storage_options or {}
    fs, path = storage.filesystem(uri, options)
    path = path.rstrip("/")
    if storage.with_retries(lambda: fs.exists(path), f"stat {uri}"):
        Shards(uri, options, 0, 0).remove()
    count = total = 0
    for page in batches(items, rows or SHARD_ROWS):
        _write_shard(fs, f"{path}/{shard_file(count)}", page)
        count, total = count + 1, total + len(page)
    facts = {"made_from": made_from, "shards": count, "items": total}
    _put(fs, f"{path}/{PLAN_FILE}", json.dumps(facts).encode())
    return Shards(uri, options, count, total)


def _write_shard(fs, path: str, page: list[Item]) -> None:
    columns = {name: [getattr(item, name) for item in page] for name in COLUMNS}
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns, schema=SCHEMA), sink, compression="zstd")
    _put(fs, path, sink.getvalue().to_pybytes())


def _put(fs, path: str, data: bytes) -> None:
    try:
        storage.write_atomic(fs, path, data)
    except storage.WriteRefused as error:
        raise PlanNotWritten(str(error), refused=True) from None
    except (OSError, storage.StorageError) as error:
        raise PlanNotWritten(f"{type(error).__name__}: {error} writing "
                             f"{storage.full_uri(fs, path)}", refused=False) from None


def reuse(uri: str, made_from: str, storage_options: dict | None = None) -> Shards | None:
    """The complete plan at `uri` if it was made from `made_from`; else None."""
    options = storage_options or {}
    try:
        facts = json.loads(storage.read_uri(storage.join(uri, PLAN_FILE), options))
    except FileNotFoundError:
        return None
    if facts.get("made_from") != made_from:
        return None
    return Shards(uri, options, facts["shards"], facts["items"])


def keys(table: pa.Table) -> pa.ChunkedArray:
    """The resume key of each row: item_id and input_fingerprint joined."""
    return pc.binary_join_element_wise(table.column("item_id"),
                                       table.column("input_fingerprint"), KEY_SEPARATOR)


def done_masks(shards: Shards, done_keys: Keys) -> Iterator[pa.ChunkedArray | None]:
    """Per shard, in plan order, which of its rows resume skips (None: none of them).

    `is_in` hashes its whole value set on every call, so shards are joined in groups of
    about a quarter as many rows as there are done keys: the done keys are hashed about
    four times per pass, not once per shard (which made resuming a million done items
    quadratic), and a group's keys take a quarter of the memory the done keys do.
    """
    if not len(done_keys):
        yield from itertools.repeat(None, shards.count)
        return
    group = max(1, len(done_keys) // (4 * SHARD_ROWS))
    for start in range(0, shards.count, group):
        indexes = range(start, min(start + group, shards.count))
        tables = list(shards.tables(["item_id", "input_fingerprint"], indexes))
        found = pc.is_in(keys(pa.concat_tables(tables)), value_set=done_keys)
        offset = 0
        for table in tables:
            yield found.slice(offset, table.num_rows)
            offset += table.num_rows


def _split(table: pa.Table, finished: pa.ChunkedArray | None) -> tuple[pa.Table, pa.Table]:
    """A shard's rows to do, and those resume skips."""
    if finished is None:
        return table, table.slice(0, 0)
    return table.filter(pc.invert(finished)), table.filter(finished)


def items_of(table: pa.Table) -> list[Item]:
    return [Item(**row) for row in table.select(list(COLUMNS)).to_pylist()]


@dataclass(frozen=True)
class Counts:
    todo: int
    done: int
    problems: int


def count(shards: Shards, done_keys: Keys) -> Counts:
    """How many items are to do, done, and to do with a pairing problem: one pass over the
    shards' key and problem columns."""
    todo = done = problems = 0
    for table, finished in zip(shards.tables(["problem"]), done_masks(shards, done_keys),
                               strict=True):
        left, skipped = _split(table, finished)
        todo, done = todo + left.num_rows, done + skipped.num_rows
        problems += left.num_rows - left.column("problem").null_count
    return Counts(todo, done, problems)


def marked(shards: Shards, done_keys: Keys) -> Iterator[tuple[Item, bool]]:
    """Every item in plan order with whether resume skips it, one shard in memory."""
    for table, finished in zip(shards.tables(), done_masks(shards, done_keys), strict=True):
        flags = [False] * table.num_rows if finished is None else finished.to_pylist()
        yield from zip(items_of(table), flags, strict=True)


def selected(shards: Shards, done_keys: Keys, done: bool) -> Iterator[Item]:
    """The items to do (`done=False`) or those resume skips, in plan order."""
    for table, finished in zip(shards.tables(), done_masks(shards, done_keys), strict=True):
        yield from items_of(_split(table, finished)[done])


def batches(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """`items` in lists of `size` (the last one shorter), across shard boundaries."""
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class Plan:
    """What a run would do: the items found, in shards, and which of them resume skips.

    Everything streams from the shards; `todo`, `already_done` and `problems` read a whole
    list into memory (small plans, tests), `todo_items()` and the counts do not.
    """

    run_id: str
    params: str
    shards: Shards
    done_keys: Keys
    counts: Counts

    @classmethod
    def counted(cls, run_id: str, params: str, shards: Shards, done_keys: Keys) -> Plan:
        return cls(run_id, params, shards, done_keys, count(shards, done_keys))

    @property
    def total(self) -> int:
        return self.counts.todo + self.counts.done

    @property
    def todo_count(self) -> int:
        return self.counts.todo

    @property
    def done_count(self) -> int:
        return self.counts.done

    @property
    def problem_count(self) -> int:
        return self.counts.problems

    def todo_items(self) -> Iterator[Item]:
        return selected(self.shards, self.done_keys, done=False)

    def done_items(self) -> Iterator[Item]:
        return selected(self.shards, self.done_keys, done=True)

    def marked_items(self) -> Iterator[tuple[Item, bool]]:
        return marked(self.shards, self.done_keys)

    @property
    def todo(self) -> list[Item]:
        return list(self.todo_items())

    @property
    def already_done(self) -> list[Item]:
        return list(self.done_items())

    @property
    def problems(self) -> list[Item]:
        return [item for item in self.todo_items() if item.problem]

    def discard(self) -> None:
        """Delete the shards: the run is finished, or the plan was a dry run's. On a disk,
        the `_plan` folder goes too when no other run's plan is left in it (an object store
        has no empty folders to leave)."""
        self.shards.remove()
        fs, path = storage.filesystem(self.shards.uri, self.shards.storage_options)
        parent = posixpath.dirname(path.rstrip("/"))
        if isinstance(fs, LocalFileSystem) and posixpath.basename(parent) == FOLDER:
            # Not empty: another run's plan is there (or appeared meanwhile).
            with contextlib.suppress(OSError):
                os.rmdir(parent)
