"""Datasets in, datasets out: Parquet parts and WebDataset shards through `inpaint run`,
and `pipeline.restore_dataset` inside a Ray Data pipeline.

Data: three 64-px photos from scikit-image with strokes masks, built in tmp_path; read
back with pyarrow, with Ray Data's own readers (`read_parquet`, `read_webdataset`), and
over a loopback S3 server.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline import RunSettings, manifest, restore_items
from pipeline.cli import app
from pipeline.datasets import expand_braces, format_of
from pipeline.datasets.parquet import ROW_KEYS
from pipeline.discover import UsageError, item_id_for
from pipeline.masks import synthetic_mask
from tests.conftest import small_photo

NAMES = ("chelsea", "coffee", "rocket")
HF_FEATURES = json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()
cli = CliRunner()


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def samples(broken: int | None = None) -> list[dict]:
    """key, photo PNG, mask PNG, caption; the photo of row `broken` is not an image."""
    rows = []
    for index, name in enumerate(NAMES):
        photo = small_photo(name, 64)
        hole = synthetic_mask("strokes", *photo.shape[:2], seed=index)
        rows.append({"key": f"{index:04d}", "image": png(photo),
                     "mask": png(hole.astype(np.uint8) * 255), "caption": name})
    if broken is not None:
        rows[broken]["image"] = b"these bytes are no photo"
    return rows


def write_parquet(folder: Path, rows: list[dict], name: str = "train-00000.parquet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / name)
    return folder / name


def write_shard(folder: Path, rows: list[dict], name: str = "shard-000000.tar") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / name, "w") as tar:
        for row in rows:
            for extension, data in (("png", row["image"]), ("mask.png", row["mask"]),
                                    ("txt", row["caption"].encode())):
                info = tarfile.TarInfo(f"{row['key']}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return folder / name


def shard_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers()}


def assert_restored(before: dict, restored: bytes) -> None:
    """Known pixels are the input's, the hole is filled with something else."""
    photo, after = pixels(before["image"]), pixels(restored)
    hole = pixels(before["mask"]) > 127
    assert after.shape == photo.shape
    assert (after[~hole] == photo[~hole]).all()
    assert (after[hole] != photo[hole]).any()


# ---- in process: layouts, conventions, errors ---------------------------------------------

def test_parquet_part_round_trip_keeps_columns_and_leaves_out_the_broken_row(tmp_path):
    rows = samples(broken=1)
    write_parquet(tmp_path / "data", rows)
    results = restore_items(RunSettings(images=str(tmp_path / "data"), input_format="parquet",
                                        out=str(tmp_path / "out"), method="telea"))
    assert [(r["relative_path"], r["status"]) for r in results] == [
        ("train-00000.parquet#0000", "ok"), ("train-00000.parquet#0001", "failed"),
        ("train-00000.parquet#0002", "ok")]
    assert results[1]["error_kind"] == "decode" and "#0001" in results[1]["error"]
    assert results[0]["output_uri"] == str(tmp_path / "out/train-00000.parquet") + "#0000"

    output = pq.read_table(tmp_path / "out/train-00000.parquet")
    assert output.schema == pq.read_schema(tmp_path / "data/train-00000.parquet")
    assert output.column("key").to_pylist() == ["0000", "0002"]
    assert output.column("caption").to_pylist() == ["chelsea", "rocket"]
    assert output.column("mask").to_pylist() == [rows[0]["mask"], rows[2]["mask"]]
    for before, restored in zip((rows[0], rows[2]), output.column("image").to_pylist(),
                                strict=True):
        assert_restored(before, restored)
    assert not list((tmp_path / "out").glob(".tmp-*")), "a temporary part was left behind"


def test_hugging_face_image_struct_without_keys_keeps_its_layout(tmp_path):
    rows = samples(broken=0)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([{"bytes": r["image"], "path": f"{r['caption']}.png"} for r in rows],
                          image_type),
        "mask": pa.array([{"bytes": r["mask"], "path": None} for r in rows], image_type),
        "label": [3, 1, 4],
    }).replace_schema_metadata({b"huggingface": HF_FEATURES})
    (tmp_path / "hf").mkdir()
    pq.write_table(table, tmp_path / "hf/train-00000-of-00001.parquet")
    results = restore_items(RunSettings(images=str(tmp_path / "hf/*.parquet"), method="telea",
                                        out=str(tmp_path / "out")))
    assert [r["status"] for r in results] == ["failed", "ok", "ok"]
    assert [r["relative_path"].split("#")[1] for r in results] == ["0", "1", "2"]

    output = pq.read_table(tmp_path / "out/train-00000-of-00001.parquet")
    assert output.schema.field("image").type == image_type
    assert output.schema.metadata[b"huggingface"] == HF_FEATURES
    assert output.column("label").to_pylist() == [1, 4]
    assert [v["path"] for v in output.column("image").to_pylist()] == ["coffee.png",
                                                                       "rocket.png"]
    # Row numbers alone would not say which rows these are once row 0 is left out.
    assert json.loads(output.schema.metadata[ROW_KEYS]) == ["1", "2"]
    for before, value in zip(rows[1:], output.column("image").to_pylist(), strict=True):
        assert_restored(before, value["bytes"])

    # --format: the bytes and the struct's path change together.
    restore_items(RunSettings(images=str(tmp_path / "hf/*.parquet"), method="telea",
                              out=str(tmp_path / "webp"), output_format="webp"))
    [value, _] = pq.read_table(tmp_path / "webp/train-00000-of-00001.parquet").column(
        "image").to_pylist()
    assert value["path"] == "coffee.webp"
    assert Image.open(io.BytesIO(value["bytes"])).format == "WEBP"


def test_webdataset_shard_round_trip_keeps_members(tmp_path):
    rows = samples(broken=2)
    write_shard(tmp_path / "shards", rows)
    results = restore_items(RunSettings(images=str(tmp_path / "shards/shard-{000000..000000}.tar"),
                                        out=str(tmp_path / "out"), method="telea"))
    assert [r["status"] for r in results] == ["ok", "ok", "failed"]
    members = shard_members((tmp_path / "out/shard-000000.tar").read_bytes())
    assert list(members) == ["0000.png", "0000.mask.png", "0000.txt",
                             "0001.png", "0001.mask.png", "0001.txt"]
    assert members["0001.txt"] == b"coffee" and members["0000.mask.png"] == rows[0]["mask"]
    for row in rows[:2]:
        assert_restored(row, members[f"{row['key']}.png"])


def test_webdataset_format_option_renames_the_photo_member(tmp_path):
    rows = samples()[:1]
    write_shard(tmp_path / "shards", rows)
    restore_items(RunSettings(images=str(tmp_path / "shards/shard-000000.tar"), method="telea",
                              out=str(tmp_path / "out"), output_format="webp"))
    members = shard_members((tmp_path / "out/shard-000000.tar").read_bytes())
    assert list(members) == ["0000.webp", "0000.mask.png", "0000.txt"]
    assert Image.open(io.BytesIO(members["0000.webp"])).format == "WEBP"


def test_a_sample_without_a_mask_member_is_a_failed_row(tmp_path):
    rows = samples()
    path = write_shard(tmp_path / "shards", rows)
    with tarfile.open(path) as tar:  # drop 0001.mask.png
        kept = [(m, tar.extractfile(m).read()) for m in tar.getmembers()
                if m.name != "0001.mask.png"]
    with tarfile.open(path, "w") as tar:
        for member, data in kept:
            tar.addfile(member, io.BytesIO(data))
    results = restore_items(RunSettings(images=str(path), out=str(tmp_path / "out"),
                                        method="telea"))
    assert [r["status"] for r in results] == ["ok", "failed", "ok"]
    assert "no mask member 0001.mask.*" in results[1]["error"]


def test_spark_folder_of_parts_and_one_mask_for_every_row(tmp_path):
    rows = samples()
    folder = tmp_path / "table.parquet"
    for index, row in enumerate(rows):
        write_parquet(folder, [{k: v for k, v in row.items() if k != "mask"}],
                      f"part-{index:05d}-c000.snappy.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    watermark = tmp_path / "watermark.png"
    watermark.write_bytes(rows[0]["mask"])
    results = restore_items(RunSettings(images=str(folder) + "/", out=str(tmp_path / "out"),
                                        mask=str(watermark), method="telea"))
    assert [r["status"] for r in results] == ["ok", "ok", "ok"]
    assert {r["mask_uri"] for r in results} == {str(watermark)}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "part-00000-c000.snappy.parquet", "part-00001-c000.snappy.parquet",
        "part-00002-c000.snappy.parquet"]


def test_format_is_told_by_the_uri_or_the_option():
    def kind(images, **fields):
        return format_of(RunSettings(images=images, out="out", **fields))

    assert kind("data/train-*.parquet") == "parquet"
    assert kind("s3://b/ds/part.parquet/") == "parquet"
    assert kind("shards/shard-{000..009}.tar") == "webdataset"
    assert kind("scans/") == "files" and kind("scans/**/*.tif") == "files"
    assert kind("hf/data", input_format="parquet") == "parquet"


def test_brace_patterns_expand_like_webdataset():
    assert expand_braces("s-{08..11}.tar") == ["s-08.tar", "s-09.tar", "s-10.tar", "s-11.tar"]
    assert expand_braces("{a,b}/{0..1}.tar") == ["a/0.tar", "a/1.tar", "b/0.tar", "b/1.tar"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"image_column": "jpg"}, "no image column 'jpg' (columns: key, image, mask, caption)"),
    ({"mask_column": "seg"}, "no mask column 'seg'"),
    ({"image_column": "caption"}, "column 'caption' is string, not image bytes"),
    ({"masks": "masks/"}, "--masks does not go with a dataset input"),
    ({"mask_column": "mask", "mask": "w.png"}, "either --mask-column or --mask"),
])
def test_dataset_usage_errors_are_one_line(tmp_path, fields, message):
    write_parquet(tmp_path / "data", samples())
    if "mask" in fields:
        (tmp_path / "w.png").write_bytes(samples()[0]["mask"])
        fields = fields | {"mask": str(tmp_path / "w.png")}
    settings = RunSettings(images=str(tmp_path / "data/train-00000.parquet"),
                           out=str(tmp_path / "out"), method="telea", **fields)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        restore_items(settings)


def test_a_column_for_loose_files_is_refused_not_ignored(archive):
    result = inpaint("run", archive["images"], "--masks", archive["masks"], "--out",
                     archive["out"], "--image-column", "jpg")
    assert result.exit_code == 2
    assert "image_column: only for a Parquet or WebDataset IMAGES" in result.output


def test_a_folder_of_parts_without_input_format_is_not_an_empty_success(tmp_path):
    write_parquet(tmp_path / "data", samples())
    with pytest.raises(UsageError, match="no photos but 1 .parquet part.*--input-format parquet"):
        restore_items(RunSettings(images=str(tmp_path / "data"), out=str(tmp_path / "out"),
                                  method="telea"))


def test_repeated_keys_and_out_among_the_parts_are_refused(tmp_path):
    rows = samples()
    rows[2]["key"] = rows[0]["key"]
    write_parquet(tmp_path / "data", rows)
    with pytest.raises(UsageError, match="repeated keys"):
        restore_items(RunSettings(images=str(tmp_path / "data/train-00000.parquet"),
                                  out=str(tmp_path / "out"), method="telea"))
    write_shard(tmp_path / "shards", samples())
    with pytest.raises(UsageError, match="names a part that is not there: .*shard-000001.tar"):
        restore_items(RunSettings(images=str(tmp_path / "shards/shard-{000000..000001}.tar"),
                                  out=str(tmp_path / "out"), method="telea"))
    write_shard(tmp_path / "shards", samples(), "shard-000001.tar")
    with pytest.raises(UsageError, match="is equal to or inside IMAGES"):
        restore_items(RunSettings(images=str(tmp_path / "shards/shard-{000000..000001}.tar"),
                                  out=str(tmp_path / "shards"), method="telea"))


def test_loose_file_params_are_unchanged_by_dataset_columns(archive):
    """Resume of loose-file archives compares params: the dataset columns stay out of them."""
    from pipeline.runner import validate

    settings = RunSettings(images=str(archive["images"]), masks=str(archive["masks"]),
                           out=str(archive["out"]), method="telea")
    assert "image_column" not in validate(settings)


# ---- on the embedded Ray: resume, Ray Data's readers --------------------------------------

def inpaint(*args) -> object:
    return cli.invoke(app, [str(a) for a in args])


def manifest_rows(out: Path) -> list[dict]:
    return manifest.read(str(out / "_manifest")).to_pylist()


@pytest.mark.slow
def test_parquet_run_resumes_part_by_part_and_ray_reads_it(tmp_path, local_ray):
    rows = samples()
    write_parquet(tmp_path / "data", rows[:2], "train-00000.parquet")
    write_parquet(tmp_path / "data", rows[2:], "train-00001.parquet")
    out = tmp_path / "out"
    args = ["run", tmp_path / "data/*.parquet", "--out", out, "--method", "telea",
            "--no-report", "--workers", "2"]

    first = inpaint(*args, "--limit", "1")
    assert first.exit_code == 0, first.output
    assert pq.read_table(out / "train-00000.parquet").column("key").to_pylist() == ["0000"]
    kept = pq.read_table(out / "train-00000.parquet").column("image").to_pylist()[0]

    second = inpaint(*args)
    assert second.exit_code == 0, second.output
    assert "2 ok; 1 already done" in second.output
    part = pq.read_table(out / "train-00000.parquet")
    assert part.column("key").to_pylist() == ["0000", "0001"]
    assert part.column("image").to_pylist()[0] == kept, "the done row was carried, not redone"
    assert {r["relative_path"] for r in manifest_rows(out)} == {
        "train-00000.parquet#0000", "train-00000.parquet#0001", "train-00001.parquet#0002"}

    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    third = inpaint(*args)
    assert third.exit_code == 0 and "3 already done" in third.output
    assert len(manifest_rows(out)) == 3, "resume redid work"
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == before

    read_back = local_ray.data.read_parquet(str(out), file_extensions=["parquet"]).take_all()
    by_key = {row["key"]: row for row in read_back}
    assert sorted(by_key) == ["0000", "0001", "0002"]
    for row in rows:
        assert_restored(row, by_key[row["key"]]["image"])
        assert by_key[row["key"]]["caption"] == row["caption"]


@pytest.mark.slow
def test_a_broken_photo_in_a_part_is_one_failed_row_and_the_run_goes_on(tmp_path, local_ray):
    write_parquet(tmp_path / "data", samples(broken=0))
    out = tmp_path / "out"
    result = inpaint("run", tmp_path / "data/train-00000.parquet", "--out", out,
                     "--method", "telea")
    assert result.exit_code == 1, result.output
    statuses = {r["relative_path"]: r["status"] for r in manifest_rows(out)}
    assert statuses == {"train-00000.parquet#0000": "failed", "train-00000.parquet#0001": "ok",
                        "train-00000.parquet#0002": "ok"}
    assert pq.read_table(out / "train-00000.parquet").column("key").to_pylist() == ["0001",
                                                                                   "0002"]
    # The report's thumbnails find the rows inside the input, mask and output parts.
    page = (out / "_report/index.html").read_text()
    assert "thumbnail unavailable" not in page
    assert len(list((out / "_report/thumbs").glob("*-restored.jpg"))) == 2


@pytest.mark.slow
def test_webdataset_run_resumes_and_ray_reads_it(tmp_path, local_ray):
    rows = samples()
    write_shard(tmp_path / "shards", rows[:2], "shard-000000.tar")
    write_shard(tmp_path / "shards", rows[2:], "shard-000001.tar")
    out = tmp_path / "out"
    args = ["run", tmp_path / "shards/shard-{000000..000001}.tar", "--out", out,
            "--method", "telea", "--no-report"]
    first = inpaint(*args, "--limit", "2")
    assert first.exit_code == 0, first.output
    assert not (out / "shard-000001.tar").exists()
    second = inpaint(*args)
    assert second.exit_code == 0 and "1 ok; 2 already done" in second.output, second.output
    before = (out / "shard-000000.tar").read_bytes()
    third = inpaint(*args)
    assert third.exit_code == 0 and "3 already done" in third.output
    assert len(manifest_rows(out)) == 3
    assert (out / "shard-000000.tar").read_bytes() == before

    read_back = local_ray.data.read_webdataset(
        [str(out / "shard-000000.tar"), str(out / "shard-000001.tar")], decoder=None).take_all()
    by_key = {row["__key__"]: row for row in read_back}
    assert sorted(by_key) == ["0000", "0001", "0002"]
    for row in rows:
        assert_restored(row, by_key[row["key"]]["png"])
        assert by_key[row["key"]]["txt"] == row["caption"].encode()


@pytest.mark.slow
def test_a_worker_killed_mid_part_loses_and_duplicates_nothing(tmp_path, local_ray):
    """SIGKILL an actor once a first part is out: Ray replays its part whole."""
    from tests.workerkill import (
        assert_only_others_temporaries_left,
        leave_killed_writes,
        run_killing_a_worker,
    )

    keys = []
    for part in range(4):  # 384-px photos, Telea radius 20: about a second each
        rows = []
        for index, name in enumerate(NAMES):
            photo = small_photo(name, 384)
            hole = synthetic_mask("strokes", *photo.shape[:2], seed=index)
            rows.append({"key": f"{part}-{index}", "image": png(photo),
                         "mask": png(hole.astype(np.uint8) * 255)})
        keys += [row["key"] for row in rows]
        write_parquet(tmp_path / "data", rows, f"part-{part}.parquet")
    out = tmp_path / "out"
    settings = RunSettings(images=str(tmp_path / "data/*.parquet"), out=str(out),
                           method="telea", method_params={"radius": 20}, workers=2,
                           report=False, run_id="killed")
    others = leave_killed_writes(out, "killed")
    summary = run_killing_a_worker(settings, "PartRestorer", out, "part-*.parquet")
    assert summary.counts == {"ok": 12}
    rows = manifest_rows(out)
    assert sorted(r["relative_path"].split("#")[1] for r in rows) == sorted(keys)
    written = [k for p in sorted(out.glob("part-*.parquet"))
               for k in pq.read_table(p).column("key").to_pylist()]
    assert sorted(written) == sorted(keys)
    assert_only_others_temporaries_left(out, others)


@pytest.mark.slow
def test_restore_dataset_in_a_ray_data_pipeline(tmp_path, local_ray):
    from pipeline import restore_dataset

    rows = samples(broken=1)
    path = write_parquet(tmp_path / "data", rows)
    ds = local_ray.data.read_parquet(str(path))
    restored = restore_dataset(ds, method="telea", workers=1, batch_size=2)
    out = {row["key"]: row for row in restored.take_all()}
    assert sorted(out) == ["0000", "0001", "0002"]
    assert out["0001"]["status"] == "failed" and out["0001"]["image"] is None
    assert out["0001"]["error_kind"] == "decode"
    for row in (rows[0], rows[2]):
        assert out[row["key"]]["status"] == "ok"
        assert out[row["key"]]["caption"] == row["caption"]
        assert_restored(row, out[row["key"]]["image"])
    assert set(manifest.COLUMNS) <= set(out["0000"])
    assert out["0000"]["item_id"] == item_id_for("0000"), "the key names the item"


@pytest.mark.slow
def test_restore_dataset_refuses_clashing_columns_or_prefixes_its_own(tmp_path, local_ray):
    from pipeline import restore_dataset

    ds = local_ray.data.from_items([{"image": b"x", "status": "raw", "width": 3}]).materialize()
    with pytest.raises(UsageError, match="status, width are also manifest columns"):
        restore_dataset(ds, method="telea")
    # img2dataset's own status, width and height stay beside the manifest's.
    [row] = restore_dataset(ds, method="telea", prefix="inpaint_").take_all()
    assert row["status"] == "raw" and row["width"] == 3
    assert row["inpaint_status"] == "failed" and row["inpaint_error_kind"] == "mask"


# ---- over S3 (loopback moto server), the installed command in a fresh process -------------

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["parquet", "webdataset"])
def test_dataset_round_trip_and_resume_over_s3(s3, tmp_path, kind, local_ray):
    import pyarrow.fs

    rows = samples()
    fs = s3.filesystem()
    if kind == "parquet":
        local = write_parquet(tmp_path / "data", rows)
        images = s3.uri("data/train-00000.parquet")
    else:
        local = write_shard(tmp_path / "data", rows)
        images = s3.uri("data/shard-{000000..000000}.tar")
    fs.put_file(str(local), s3.uri(f"data/{local.name}"))
    # On the session's Ray, in this process (see `local_ray`): a command of its own would
    # start a Ray per run.
    args = ["run", images, "--out", s3.uri("out"), "--method", "telea", "--no-report",
            "--storage-options", s3.endpoint_option()]
    first = inpaint(*args)
    assert first.exit_code == 0, first.stderr
    assert "3 ok" in first.stdout
    second = inpaint(*args)
    assert second.exit_code == 0 and "3 already done" in second.stdout, second.stderr
    assert len(manifest.read(s3.uri("out/_manifest"))) == 3, "resume redid work"
    output = fs.cat_file(s3.uri(f"out/{local.name}"))
    assert not [key for key in fs.find(s3.uri("out")) if ".tmp-" in key]
    said = "".join([first.stdout, first.stderr, second.stdout, second.stderr,
                    json.dumps(manifest.read(s3.uri("out/_manifest")).to_pylist(), default=str)])
    assert not [secret for secret in s3.secrets if secret in said]

    if kind == "parquet":
        restored = pq.read_table(io.BytesIO(output)).column("image").to_pylist()
    else:
        members = shard_members(output)
        restored = [members[f"{row['key']}.png"] for row in rows]
    for row, data in zip(rows, restored, strict=True):
        assert_restored(row, data)

    # Ray Data's own reader, on the bucket itself.
    bucket = pyarrow.fs.S3FileSystem(
        access_key=s3.secrets[0], secret_key=s3.secrets[1], session_token=s3.secrets[2],
        endpoint_override=s3.endpoint, region="us-east-1")
    path = f"{s3.bucket}/out/{local.name}"
    if kind == "parquet":
        read_back = local_ray.data.read_parquet(path, filesystem=bucket).take_all()
        assert [r["key"] for r in read_back] == ["0000", "0001", "0002"]
    else:
        read_back = local_ray.data.read_webdataset(path, filesystem=bucket,
                                                   decoder=None).take_all()
        assert sorted(r["__key__"] for r in read_back) == ["0000", "0001", "0002"]
