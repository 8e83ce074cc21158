"""The plan as Parquet shards: written as the listing goes, read back shard by shard,
resume as a join against the manifest, `--limit`, `--dry-run`, reuse under one run id."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import discover, manifest, plans, runner
from pipeline.cli import app
from pipeline.settings import RunSettings
from tests.conftest import save, small_photo

ORDER = ["a/b/coffee.png", "a/chelsea.jpg", "rocket.png"]  # the archive fixture, sorted


@pytest.fixture
def two_per_shard(monkeypatch):
    monkeypatch.setattr(plans, "SHARD_ROWS", 2)


def settings_of(archive, **changes) -> RunSettings:
    return RunSettings(images=str(archive["images"]), masks=str(archive["masks"]),
                       out=str(archive["out"]), method="telea", **changes)


def record_done(settings: RunSettings, work: plans.Plan, items) -> None:
    writer = manifest.ManifestWriter(settings.manifest_uri(), "earlier")
    writer.add([manifest.empty_row() | {"item_id": item.item_id, "status": "ok",
                                        "input_fingerprint": item.input_fingerprint,
                                        "params": work.params} for item in items])
    writer.flush()


def test_the_plan_is_parquet_shards_read_back_in_listing_order(archive, two_per_shard):
    work = runner.plan(settings_of(archive, run_id="r1"))
    folder = archive["out"] / "_plan" / "r1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "plan.json", "shard-000000.parquet", "shard-000001.parquet"]
    shards = [pq.read_table(folder / f"shard-00000{i}.parquet") for i in (0, 1)]
    assert [t.num_rows for t in shards] == [2, 1]
    assert [r for t in shards for r in t.column("relative_path").to_pylist()] == ORDER
    assert [item.relative_path for item in work.todo_items()] == ORDER
    assert work.todo == discover.pair(str(archive["images"]), str(archive["masks"]))
    assert (work.total, work.todo_count, work.done_count, work.problem_count) == (3, 3, 0, 0)
    assert [[i.relative_path for i in b] for b in plans.batches(work.todo_items(), 2)] == [
        ORDER[:2], ORDER[2:]]


def test_shards_are_written_while_the_listing_goes_on(tmp_path):
    items = discover.pair(*_photos(tmp_path, 5), masks=None)
    shard = tmp_path / "plan" / "shard-000000.parquet"
    seen = []

    def listing():
        for item in items:
            seen.append(shard.exists())
            yield item

    shards = plans.write(listing(), str(tmp_path / "plan"), "x", rows=2)
    assert seen == [False, False, True, True, True], "shard 0 waited for the whole listing"
    assert (shards.count, shards.total) == (3, 5)


def _photos(root, count: int) -> tuple[str]:
    """IMAGES with `count` tiny photos (and no masks: each item carries its problem)."""
    for index in range(count):
        save(small_photo(size=16), root / "images" / f"p{index}.png")
    return (str(root / "images"),)


def test_resume_is_a_join_of_the_shards_against_the_manifest(archive, two_per_shard):
    settings = settings_of(archive)
    first = runner.plan(settings)
    done = [item for item in first.todo if item.relative_path in ("a/chelsea.jpg",
                                                                  "rocket.png")]
    record_done(settings, first, done)
    second = runner.plan(settings)
    assert (second.todo_count, second.done_count) == (1, 2)
    assert [i.relative_path for i in second.todo_items()] == ["a/b/coffee.png"]
    assert [i.relative_path for i in second.done_items()] == ["a/chelsea.jpg", "rocket.png"]
    assert [(i.relative_path, d) for i, d in second.marked_items()] == [
        ("a/b/coffee.png", False), ("a/chelsea.jpg", True), ("rocket.png", True)]
    # A changed photo is a new fingerprint: the join no longer finds it done.
    save(small_photo("rocket", 48), archive["images"] / "rocket.png")
    assert [i.relative_path for i in runner.plan(settings).todo] == ["a/b/coffee.png",
                                                                     "rocket.png"]
    assert runner.plan(settings.model_copy(update={"force": True})).todo_count == 3


def test_limit_plans_the_first_items_only(archive, two_per_shard):
    work = runner.plan(settings_of(archive, limit=2, run_id="r1"))
    assert (work.total, work.shards.count) == (2, 1)
    assert [i.relative_path for i in work.todo_items()] == ORDER[:2]


def test_a_plan_is_reused_under_the_same_run_id_and_inputs_only(archive, two_per_shard):
    settings = settings_of(archive, run_id="r1")
    assert runner.plan(settings).total == 3
    save(small_photo(), archive["images"] / "new.png")  # listed only by a new listing
    assert runner.plan(settings).total == 3, "the plan was not reused"
    assert runner.plan(settings.model_copy(update={"run_id": "r2"})).total == 4
    assert runner.plan(settings.model_copy(update={"limit": 2})).total == 2, "reused"
    (archive["out"] / "_plan" / "r1" / "plan.json").unlink()  # a driver killed mid-listing
    assert runner.plan(settings).total == 4


def test_dry_run_lists_every_shard_and_writes_nothing(archive, two_per_shard, tmp_path,
                                                      monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    result = CliRunner().invoke(app, ["run", str(archive["images"]), "--masks",
                                      str(archive["masks"]), "--out", str(archive["out"]),
                                      "--dry-run", "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert "3 items found, 3 to restore, 0 already done" in result.output
    listed = [line.split()[1] for line in result.output.splitlines()
              if line.startswith("  todo")]
    assert [path[len(str(archive["images"])) + 1:] for path in listed] == ORDER
    assert not archive["out"].exists()
    assert list((tmp_path / "tmp").iterdir()) == [], "the dry run's plan was left behind"


@pytest.mark.slow
def test_a_run_resumed_under_its_run_id_reuses_its_plan_and_deletes_it_at_the_end(
        archive, two_per_shard, local_ray):
    settings = settings_of(archive, run_id="r1", report=False)
    work = runner.plan(settings)  # as a driver killed after planning and one row left it
    record_done(settings, work, work.todo[:1])
    save(small_photo(), archive["images"] / "new.png")  # not in the plan being resumed
    summary = runner.run(settings)
    assert summary.counts == {"ok": 2} and summary.resumed == 1
    assert not (archive["out"] / "_plan").exists()  # no empty folder left in OUT either
    assert not (archive["out"] / "new.png").exists()


def test_shards_are_joined_in_groups_and_keep_their_order(archive, monkeypatch):
    monkeypatch.setattr(plans, "SHARD_ROWS", 1)  # 3 shards; 10 done keys join 2 at a time
    settings = settings_of(archive)
    first = runner.plan(settings)
    record_done(settings, first, [first.todo[1]])
    writer = manifest.ManifestWriter(settings.manifest_uri(), "other")
    writer.add([manifest.empty_row() | {"item_id": f"gone{n}", "status": "ok",
                                        "input_fingerprint": "f", "params": first.params}
                for n in range(9)])  # items no longer in IMAGES
    writer.flush()
    second = runner.plan(settings)
    assert len(second.done_keys) == 10
    assert [len(mask) for mask in plans.done_masks(second.shards, second.done_keys)] == [1] * 3
    assert [(i.relative_path, d) for i, d in second.marked_items()] == [
        (ORDER[0], False), (ORDER[1], True), (ORDER[2], False)]
    assert (second.todo_count, second.done_count) == (2, 1)


def test_an_out_too_full_for_the_plan_stops_before_any_work(archive, tmp_path):
    from tests.disks import tmpfs

    with tmpfs(tmp_path / "disk", "size=8k") as disk:
        (disk / "filler").write_bytes(b"x" * 4096)  # one page left: the probe fits, not 2 files
        settings = settings_of(archive).model_copy(update={"out": str(disk / "out")})
        with pytest.raises(runner.RunStopped, match=r"^stopped: the plan could not be "
                           r"written: no space left on device writing .*Nothing was restored"):
            runner.plan(settings)
        assert not list(disk.rglob(".tmp-*")), "a half-written shard was left"
