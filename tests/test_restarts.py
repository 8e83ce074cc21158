"""`pipeline.restarts`: the folders of the batches a restarted actor replayed, swept of the
run's temporaries alone. (A real SIGKILLed actor: tests/test_runner.py, test_datasets.py.)"""

from __future__ import annotations

from pipeline import storage
from pipeline.restarts import Replays
from pipeline.worker import RESTARTED


def rows_of(worker: str, restarted: bool, count: int = 2) -> list[dict]:
    marked = {RESTARTED: True} if restarted else {}
    return [{"item_id": f"{worker}-{n}", "worker": worker} | marked for n in range(count)]


def test_the_first_rows_of_a_restarted_process_keep_its_replayed_batches_folders():
    replays = Replays(lambda batch: {f"out/{name}" for name in batch})
    first_life = rows_of("host:100", restarted=False)
    replays.noticed(first_life, [["a"]])
    assert replays.folders == set()

    second_life = rows_of("host:200", restarted=True)
    replays.noticed(second_life, [["b"], ["c", "b"]])  # this batch, and one still running
    assert replays.folders == {"out/b", "out/c"}
    assert not any(RESTARTED in row for row in second_life), "a row kept the mark"

    replays.noticed(rows_of("host:200", restarted=True), [["d"]])  # the same life: a new batch
    assert replays.folders == {"out/b", "out/c"}
    replays.noticed(rows_of("host:300", restarted=True), [["e"]])  # killed again
    assert replays.folders == {"out/b", "out/c", "out/e"}


def test_the_sweep_removes_the_runs_temporaries_from_the_kept_folders_only(tmp_path):
    kept, other = tmp_path / "kept", tmp_path / "other"
    names = [storage.temporary_prefix(run) + "0" * 16 for run in ("run", "run-2", None)]
    for folder in (kept, other):
        folder.mkdir()
        for name in [*names, "photo.png"]:
            (folder / name).write_bytes(b"bytes")
    replays = Replays(lambda batch: {str(kept)})
    replays.noticed(rows_of("host:2", restarted=True), [["a"]])
    assert replays.sweep("run") == 1
    assert sorted(path.name for path in kept.iterdir()) == sorted([*names[1:], "photo.png"])
    assert sorted(path.name for path in other.iterdir()) == sorted([*names, "photo.png"])
    assert Replays(lambda batch: {str(other)}).sweep("run") == 0, "no restart, no sweep"
