"""The Parquet manifest: one row per item per run, the single source of truth.

Only this module writes Parquet. Parts are written whole under a temporary name (or
as one PUT) so no reader sees half a file; rows are de-duplicated per run by item_id,
because Ray replays the batch of a worker that died.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline import storage

SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("item_id", pa.string()),
        ("relative_path", pa.string()),
        ("image_uri", pa.string()),
        ("mask_uri", pa.string()),
        ("output_uri", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("error_kind", pa.string()),
        ("method", pa.string()),
        ("params", pa.string()),
        ("input_fingerprint", pa.string()),
        ("input_sha256", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("hole_fraction", pa.float64()),
        ("damage_fraction", pa.float64()),
        ("defects", pa.string()),
        # Added with `inpaint review`; parts written before it read as null.
        ("mask_reviewed", pa.bool_()),
        # Which detector found the mask (`auto` picks one per photo); null in earlier parts.
        ("detector", pa.string()),
        ("iterations", pa.int64()),
        ("loss", pa.float64()),
        ("tone", pa.string()),
        ("seconds", pa.float64()),
        ("input_bytes", pa.int64()),
        ("output_bytes", pa.int64()),
        ("encoding", pa.string()),
        ("worker", pa.string()),
        ("device", pa.string()),
        ("model", pa.string()),
        ("weights_sha256", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)
COLUMNS = SCHEMA.names
DONE_STATUSES = ("ok", "skipped")


def empty_row() -> dict[str, Any]:
    return dict.fromkeys(COLUMNS)


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{c: row.get(c) for c in COLUMNS} for row in rows], SCHEMA)


def dataset(uri: str, storage_options: dict | None = None) -> pads.Dataset:
    """The manifest's parts as one Arrow dataset, for scans that filter or project."""
    fs, path = storage.filesystem(uri, storage_options)
    return pads.dataset(path, filesystem=fs, format="parquet", schema=SCHEMA)


def read(uri: str, storage_options: dict | None = None, columns: list[str] | None = None):
    """The whole manifest as one Arrow table (empty when there is none yet)."""
    fs, path = storage.filesystem(uri, storage_options)
    if not storage.with_retries(lambda: fs.exists(path), f"stat {uri}"):
        return SCHEMA.empty_table().select(columns or COLUMNS)
    return dataset(uri, storage_options).to_table(columns=columns)


def done_keys(uri: str, params: Iterable[str],
              storage_options: dict | None = None) -> pa.ChunkedArray:
    """The resume keys (`item_id/input_fingerprint`, pipeline.plans) of every ok or skipped
    row recorded with one of `params`: what resume skips, as one Arrow string array.

    Reads two narrow columns of the rows that match (status and params are filtered in
    the scan, batch by batch), so a million-row manifest costs seconds and tens of MB,
    not the images themselves nor a Python object per row.
    """
    from pipeline import plans

    fs, path = storage.filesystem(uri, storage_options)
    if not storage.with_retries(lambda: fs.exists(path), f"stat {uri}"):
        return pa.chunked_array([], pa.string())
    wanted = pads.field("status").isin(list(DONE_STATUSES)) & pads.field("params").isin(
        sorted(params))
    scanner = dataset(uri, storage_options).scanner(
        columns=["item_id", "input_fingerprint"], filter=wanted)
    # Keys batch by batch: the two columns are never held whole beside their keys.
    # Duplicates (an item done in two runs) stay: `is_in` hashes its value set anyway.
    # Kept as chunks: concatenating them would hold the keys twice at the peak.
    found = [plans.keys(pa.Table.from_batches([batch])).combine_chunks().drop_null()
             for batch in scanner.to_batches() if batch.num_rows]
    return pa.chunked_array(found, pa.string())


class PartNotWritten(RuntimeError):
    """A manifest part that could not be written (full, read-only, unreachable storage).

    Nothing of it is left behind and its rows stay queued (`ManifestWriter.unwritten`);
    `str()` says why, in words.
    """


class ManifestWriter:
    """Collects rows of one run and writes them as numbered Parquet parts.

    Parts are flushed every `flush_rows` rows or `flush_seconds` seconds, so a run
    interrupted by Ctrl-C or a killed driver loses at most the rows since the last part,
    and resume redoes only those items.
    """

    def __init__(
        self,
        uri: str,
        run_id: str,
        storage_options: dict | None = None,
        flush_rows: int = 500,
        flush_seconds: float = 30.0,
    ):
        self.fs, self.path = storage.filesystem(uri, storage_options)
        self.run_id = run_id
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._pending: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._parts = 0
        self._last_flush = time.monotonic()
        self.rows_written = 0
        self.counts: Counter[str] = Counter()  # statuses of the rows queued, written or not

    def add(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Queue rows; returns those that were new (a replayed item is dropped here)."""
        fresh = []
        for row in rows:
            if row["item_id"] in self._seen:
                continue
            self._seen.add(row["item_id"])
            fresh.append({**row, "run_id": self.run_id})
        self._pending.extend(fresh)
        self.counts.update(row["status"] for row in fresh)
        if len(self._pending) >= self.flush_rows or (
            self._pending and time.monotonic() - self._last_flush > self.flush_seconds
        ):
            self.flush()
        return fresh

    @property
    def unwritten(self) -> list[dict[str, Any]]:
        """Rows queued but not in a part yet: after a flush that failed, those it lost."""
        return list(self._pending)

    def flush(self) -> None:
        """Write the queued rows as one part; `PartNotWritten` if the storage refuses it."""
        if not self._pending:
            return
        buffer = io.BytesIO()
        pq.write_table(to_table(self._pending), buffer, compression="zstd")
        name = f"{self.path.rstrip('/')}/part-{self.run_id}-{self._parts:05d}.parquet"
        try:
            storage.write_atomic(self.fs, name, buffer.getvalue())
        except storage.WriteRefused as error:
            raise PartNotWritten(str(error)) from error
        except (OSError, storage.StorageError) as error:
            where = storage.full_uri(self.fs, name)
            raise PartNotWritten(f"{type(error).__name__}: {error} writing {where}") from error
        self._parts += 1
        self.rows_written += len(self._pending)
        self._pending = []
        self._last_flush = time.monotonic()


def params_of(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(row["params"]) if row.get("params") else {}
