"""`pipeline.run` on a real local Ray: streaming rows, and surviving a killed worker."""

from __future__ import annotations

import re

import pyarrow.dataset as pads
import pytest

from pipeline import runner
from pipeline.masks import synthetic_mask
from pipeline.settings import RunSettings
from tests.conftest import save, save_mask, small_photo
from tests.test_cli import inpaint
from tests.workerkill import (
    assert_only_others_temporaries_left,
    leave_killed_writes,
    run_killing_a_worker,
)


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
        workers=2, batch_size=2, report=False, run_id="killed",
    )
    others = leave_killed_writes(slow_archive / "out", "killed")
    summary = run_killing_a_worker(settings, "Restorer", slow_archive / "out", "*.png")
    assert summary.counts == {"ok": 10}
    rows = pads.dataset(str(slow_archive / "out" / "_manifest")).to_table().to_pylist()
    assert sorted(r["relative_path"] for r in rows) == [f"photo-{i:02d}.png" for i in range(10)]
    assert all(r["status"] == "ok" for r in rows)
    assert len(list((slow_archive / "out").glob("*.png"))) == 10
    assert_only_others_temporaries_left(slow_archive / "out", others)


@pytest.mark.slow
def test_workers_that_cannot_start_are_one_usage_error(archive, local_ray):
    settings = RunSettings(images=str(archive["images"]), masks=str(archive["masks"]),
                           out=str(archive["out"]), method="hallucinate", report=False,
                           weights=str(archive["root"] / "missing.pth"))
    with pytest.raises(runner.WorkerStartError) as raised:
        runner.run(settings)
    assert str(raised.value) == ("a restoring worker could not start: PriorError: weights not "
                                 f"found: {archive['root'] / 'missing.pth'}")
    assert not list(archive["out"].rglob("*.png")), "an item was restored"


def counted_items(count: int) -> str:
    """How the stop message counts items: with concurrent writes a stop can leave just one."""
    return f"{count} item" + ("" if count == 1 else "s")


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


# --- Storage that refuses writes: a read-only OUT, a full disk, a bucket over quota ------


def tiny_archive(root, count: int) -> tuple[str, str]:
    """`count` photos of 32 px (under 3 KB as PNG, so one 4 KB page of a tmpfs each)."""
    for index in range(count):
        photo = small_photo(["chelsea", "coffee", "rocket", "astronaut"][index % 4], 32)
        save(photo, root / "images" / f"photo-{index:02d}.png")
        hole = synthetic_mask("scratch", photo.shape[0], photo.shape[1], seed=index)
        save_mask(hole, root / "masks" / f"photo-{index:02d}.png")
    return str(root / "images"), str(root / "masks")


def stop_message(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: stopped:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def recorded(manifest_uri) -> dict[str, str]:
    from pipeline import manifest

    rows = manifest.read(str(manifest_uri)).to_pylist()
    assert len({r["item_id"] for r in rows}) == len(rows), "an item recorded twice"
    return {r["relative_path"]: r["status"] for r in rows}


@pytest.mark.parametrize("where", ["out", "manifest", "detect"])
def test_an_output_that_cannot_be_written_is_a_usage_error_before_any_work(archive, tmp_path,
                                                                          where):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from tests.disks import tmpfs

    with tmpfs(tmp_path / "ro", "ro,size=1m") as read_only:
        target = read_only / where
        images, masks, out = archive["images"], archive["masks"], archive["out"]
        args = {
            "out": ["run", images, "--masks", masks, "--out", target],
            "manifest": ["run", images, "--masks", masks, "--out", out, "--manifest", target],
            "detect": ["detect", images, "--out", target],
        }[where]
        result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    what = "--manifest" if where == "manifest" else "OUT"
    assert result.output.splitlines() == [
        f"error: {what} is not writable: read-only file system ({target})"]
    assert not out.exists(), "work started"


@pytest.mark.slow
@pytest.mark.parametrize("manifest_on", ["another disk", "the full disk"])
def test_a_full_disk_stops_the_run_and_rerunning_after_freeing_space_resumes(tmp_path,
                                                                            manifest_on,
                                                                            local_ray):
    # `inpaint` runs in this process, on the session's Ray: a command of its own would start
    # a Ray per run, and the stop and resume checked here do not depend on its process.
    from tests.disks import remount, tmpfs

    images, masks = tiny_archive(tmp_path, 40)
    with tmpfs(tmp_path / "disk", "size=64k") as disk:
        out = disk / "out"
        manifest_uri = tmp_path / "manifest" if manifest_on == "another disk" else out / "_manifest"
        args = ["run", images, "--masks", masks, "--out", out, "--method", "telea",
                "--manifest", manifest_uri]
        first = inpaint(*args)
        assert first.exit_code == 5, first.stderr
        message = stop_message(first)
        on_disk = sorted(p.name for p in out.glob("*.png"))
        assert 0 < len(on_disk) < 40
        refused_at = re.search(rf"no space left on device writing {re.escape(str(out))}/"
                               r"(photo-\d\d\.png)", message)
        assert refused_at and refused_at[1] not in on_disk, message
        assert "run the same command again: it resumes" in message
        assert not list(disk.rglob(".tmp-*")), "a half-written file was left"
        # Writes run side by side (pipeline/stages.py): a file another batch finished as the
        # run stopped may have no row yet, and the rerun redoes it; every row is a file.
        if manifest_on == "another disk":  # the restored items keep their rows
            rows = recorded(manifest_uri)
            assert set(rows.values()) <= {"ok"} and set(rows) <= set(on_disk)
            assert (f"{counted_items(len(rows))} restored in this run, recorded in "
                    f"{manifest_uri}; {40 - len(rows)} not done. Free space") in message
            resumed = len(rows)
        else:  # a 4 KB page of room at most: no manifest part fits, and none is half there
            assert (f"the manifest could not be written either: no space left on device "
                    f"writing {manifest_uri}/part-") in message
            counted = re.search(r"(\d+) items? restored in this run, (\d+) of them without a "
                                r"manifest row; (\d+) not done", message)
            assert counted and counted[1] == counted[2], message
            assert 0 < int(counted[1]) <= len(on_disk) and int(counted[3]) == 40 - int(
                counted[1])
            assert list(manifest_uri.iterdir()) == []
            resumed = 0
        remount(disk, "size=4m")
        second = inpaint(*args)
        assert second.exit_code == 0, second.stderr
        assert f"{40 - resumed} ok; {resumed} already done" in second.stdout
        assert recorded(manifest_uri) == {f"photo-{i:02d}.png": "ok" for i in range(40)}
        assert len(list(out.glob("*.png"))) == 40


@pytest.mark.slow
def test_a_bucket_over_quota_mid_run_stops_it_and_a_rerun_resumes(s3, tmp_path, local_ray):
    from tests.s3server import FaultyProxy

    images, masks = tiny_archive(tmp_path, 12)
    fs = s3.filesystem()
    fs.put(images, s3.uri("images"), recursive=True)
    fs.put(masks, s3.uri("masks"), recursive=True)
    proxy = FaultyProxy(s3.endpoint)
    full = [f"/{s3.bucket}/out/photo-{i:02d}.png" for i in range(5, 12)]
    for key in full:  # what Ceph RGW answers a bucket over its quota
        proxy.fail("PUT", key, -1, "QuotaExceeded", 403, "The bucket is over its quota")
    manifest_uri = tmp_path / "manifest"
    args = ["run", s3.uri("images"), "--masks", s3.uri("masks"), "--out", s3.uri("out"),
            "--method", "telea", "--manifest", str(manifest_uri),
            "--storage-options", s3.endpoint_option(proxy.endpoint)]
    try:
        first = inpaint(*args)
        assert first.exit_code == 5, first.stderr
        message = stop_message(first)
        refused_at = re.search(
            r"the object store is full or over quota \(An error occurred \(QuotaExceeded\) "
            r"when calling the PutObject operation: The bucket is over its quota\) writing "
            rf"s3:/(/{s3.bucket}/out/photo-\d\d\.png)", message)
        assert refused_at and refused_at[1] in full, message
        # Writes run side by side (pipeline/stages.py): photo-00..04 are restored unless
        # the stop overtook them; each is recorded if its batch came back.
        rows = recorded(manifest_uri)
        assert set(rows.values()) <= {"ok"}
        assert set(rows) <= {f"photo-{i:02d}.png" for i in range(5)}
        assert (f"{counted_items(len(rows))} restored in this run, recorded in {manifest_uri}; "
                f"{12 - len(rows)} not done") in message
        assert all(proxy.seen[("PUT", key)] <= 1 for key in full), "a refusal was retried"
        proxy.plans.clear()  # the quota raised
        second = inpaint(*args)
    finally:
        proxy.close()
    assert second.exit_code == 0, second.stderr
    assert f"{12 - len(rows)} ok; {len(rows)} already done" in second.stdout
    assert recorded(manifest_uri) == {f"photo-{i:02d}.png": "ok" for i in range(12)}


@pytest.mark.slow
def test_files_written_through_ray_follow_the_umask_of_the_command(archive):
    from tests.disks import file_modes, umask
    from tests.test_s3 import inpaint_cli

    with umask(0o027):  # the command's own; its local Ray and workers inherit it
        result = inpaint_cli("run", str(archive["images"]), "--masks", "auto", "--out",
                             str(archive["out"]), "--method", "telea")
    assert result.returncode == 0, result.stderr
    modes = file_modes(archive["out"])
    assert {"a/chelsea.jpg", "_masks/a/chelsea.png", "_report/index.html"} <= set(modes)
    assert any(name.startswith("_manifest/part-") for name in modes)
    assert {name: oct(mode) for name, mode in modes.items() if mode != 0o640} == {}


def test_a_report_the_storage_refuses_is_one_line_and_exit_5(archive, tmp_path):
    from typer.testing import CliRunner

    from pipeline import manifest
    from pipeline.cli import app
    from tests.disks import tmpfs

    settings = RunSettings(images=str(archive["images"]), masks=str(archive["masks"]),
                           out=str(archive["out"]), method="telea")
    writer = manifest.ManifestWriter(settings.manifest_uri(), "run1")
    writer.add(runner.restore_items(settings))
    writer.flush()
    with tmpfs(tmp_path / "ro", "ro,size=1m") as read_only:
        result = CliRunner().invoke(app, ["report", settings.manifest_uri(), "--out",
                                          str(read_only / "report")])
    assert result.exit_code == 5, result.output
    assert result.output.startswith("error: the report could not be written: read-only file "
                                    f"system writing {read_only}/report/")
    assert len(result.output.splitlines()) == 1
