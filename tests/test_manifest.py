"""Manifest parts: atomic, de-duplicated per run, readable by pyarrow and DuckDB."""

from __future__ import annotations

import duckdb
import pyarrow.dataset as pads
import pytest

from pipeline import manifest


def row(item_id: str, status: str = "ok", fingerprint: str = "f", params: str = "{}") -> dict:
    return manifest.empty_row() | {"item_id": item_id, "status": status,
                                   "input_fingerprint": fingerprint, "params": params}


def test_replayed_rows_are_written_once(tmp_path):
    writer = manifest.ManifestWriter(str(tmp_path / "m"), "run1")
    assert len(writer.add([row("a"), row("b")])) == 2
    assert writer.add([row("a")]) == []
    writer.flush()
    table = manifest.read(str(tmp_path / "m"))
    assert sorted(table.column("item_id").to_pylist()) == ["a", "b"]
    assert set(table.column("run_id").to_pylist()) == {"run1"}


def test_parts_are_flushed_by_count_and_read_as_one_table(tmp_path):
    writer = manifest.ManifestWriter(str(tmp_path / "m"), "run1", flush_rows=2)
    for item_id in "abc":
        writer.add([row(item_id)])
    writer.flush()
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["part-run1-00000.parquet", "part-run1-00001.parquet"]
    assert pads.dataset(str(tmp_path / "m")).count_rows() == 3
    query = f"select count(*) from read_parquet('{tmp_path}/m/*.parquet')"
    assert duckdb.sql(query).fetchall() == [(3,)]


def test_done_keys_hold_only_ok_and_skipped_rows_of_the_params_given(tmp_path):
    writer = manifest.ManifestWriter(str(tmp_path / "m"), "run1")
    writer.add([row("a"), row("b", "skipped"), row("c", "failed"),
                row("d") | {"params": '{"radius": 3}'}])
    writer.flush()
    keys = manifest.done_keys(str(tmp_path / "m"), {"{}"})
    assert sorted(keys.to_pylist()) == ["a/f", "b/f"]
    assert sorted(manifest.done_keys(str(tmp_path / "m"), {"{}", '{"radius": 3}'})
                  .to_pylist()) == ["a/f", "b/f", "d/f"]


def test_missing_manifest_reads_empty(tmp_path):
    assert manifest.read(str(tmp_path / "none")).num_rows == 0
    assert len(manifest.done_keys(str(tmp_path / "none"), {"{}"})) == 0


def test_no_temporary_files_left_behind(tmp_path):
    writer = manifest.ManifestWriter(str(tmp_path / "m"), "run1")
    writer.add([row("a")])
    writer.flush()
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["part-run1-00000.parquet"]


def test_a_part_the_disk_refuses_leaves_nothing_and_keeps_its_rows(tmp_path):
    from tests.disks import remount, tmpfs

    with tmpfs(tmp_path / "disk", "ro,size=1m") as disk:
        writer = manifest.ManifestWriter(str(disk / "m"), "run1")
        writer.add([row("a"), row("b", "failed")])
        with pytest.raises(manifest.PartNotWritten, match="^read-only file system writing "):
            writer.flush()
        assert list(disk.iterdir()) == []
        assert [r["item_id"] for r in writer.unwritten] == ["a", "b"]
        assert (writer.rows_written, writer.counts) == (0, {"ok": 1, "failed": 1})
        remount(disk, "rw")
        writer.flush()  # the same rows, once the disk takes writes again
        assert sorted(manifest.read(str(disk / "m")).column("item_id").to_pylist()) == ["a", "b"]
        assert writer.unwritten == []
