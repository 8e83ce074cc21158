"""`pipeline.run` on a real local Ray: streaming rows, and surviving a killed worker."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pyarrow.dataset as pads
import pytest

from pipeline import runner
from pipeline.masks import synthetic_mask
from pipeline.settings import RunSettings
from tests.conftest import save, save_mask, small_photo


def actor_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if "ray::Restorer" in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.fixture
def slow_archive(tmp_path):
    """Ten photos whose fill takes about a second each (Telea with a wide radius)."""
    for index in range(10):
        photo = small_photo(["chelsea", "coffee", "rocket", "astronaut"][index % 4], 384)
        save(photo, tmp_path / "images" / f"photo-{index:02d}.png")
        hole = synthetic_mask("strokes", photo.shape[0], photo.shape[1], seed=index)
        save_mask(hole, tmp_path / "masks" / f"photo-{index:02d}.png")
    return tmp_path


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(slow_archive, local_ray):
    settings = RunSettings(
        images=str(slow_archive / "images"), masks=str(slow_archive / "masks"),
        out=str(slow_archive / "out"), method="telea", method_params={"radius": 20},
        workers=2, batch_size=2, report=False,
    )
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=runner.run(settings)))
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        outputs = list((slow_archive / "out").glob("*.png"))
        workers = actor_processes()
        if outputs and workers:
            killed = workers[0].pid
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    thread.join(timeout=300)
    assert killed is not None, "the run ended before a worker could be killed"
    assert outcome["summary"].counts == {"ok": 10}
    rows = pads.dataset(str(slow_archive / "out" / "_manifest")).to_table().to_pylist()
    assert sorted(r["relative_path"] for r in rows) == [f"photo-{i:02d}.png" for i in range(10)]
    assert all(r["status"] == "ok" for r in rows)
    assert len(list((slow_archive / "out").glob("*.png"))) == 10
    assert not list((slow_archive / "out").glob(".tmp-*"))


def test_plan_splits_done_from_todo(archive, tmp_path):
    from pipeline import manifest

    settings = RunSettings(images=str(archive["images"]), masks=str(archive["masks"]),
                           out=str(archive["out"]), method="telea")
    first = runner.plan(settings)
    assert len(first.todo) == 3 and not first.already_done
    writer = manifest.ManifestWriter(settings.manifest_uri(), first.run_id)
    done = first.todo[0]
    writer.add([manifest.empty_row() | {"item_id": done.item_id, "status": "ok",
                                        "input_fingerprint": done.input_fingerprint,
                                        "params": first.params}])
    writer.flush()
    second = runner.plan(settings)
    assert [i.item_id for i in second.already_done] == [done.item_id]
    assert len(second.todo) == 2
    assert len(runner.plan(settings.model_copy(update={"force": True})).todo) == 3


def test_memory_uris_are_refused_for_ray_runs_but_work_in_process(tmp_path):
    import fsspec

    from pipeline.discover import UsageError

    memory = fsspec.filesystem("memory")
    photo = small_photo()
    save(photo, tmp_path / "p.png")
    save_mask(synthetic_mask("scratch", *photo.shape[:2], seed=1), tmp_path / "m.png")
    memory.pipe("/in/p.png", (tmp_path / "p.png").read_bytes())
    memory.pipe("/masks/p.png", (tmp_path / "m.png").read_bytes())
    settings = RunSettings(images="memory://in", masks="memory://masks", out="memory://out",
                           method="telea")
    with pytest.raises(UsageError, match="memory://"):
        runner.plan(settings)
    rows = runner.restore_items(settings)
    assert [r["status"] for r in rows] == ["ok"]
    assert memory.exists("/out/p.png")
