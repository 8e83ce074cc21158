"""Object storage for real: the `inpaint` CLI against a loopback S3 server (moto).

The server is started by the `s3_server` fixture (tests/s3server.py); the endpoint and
fake credentials reach the CLI, and the Ray workers it starts, through the standard
AWS environment variables only.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline import manifest, restore_items, storage
from pipeline.cli import app
from pipeline.discover import UsageError, pair
from pipeline.settings import RunSettings


def upload_archive(s3, archive) -> None:
    fs = s3.filesystem()
    for folder in ("images", "masks"):
        fs.put(str(archive[folder]), s3.uri(folder), recursive=True)


def inpaint_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed command, in a fresh process: its Ray workers inherit the environment."""
    command = [sys.executable, "-c", "from pipeline.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=240)


def objects(s3, prefix: str) -> dict[str, bytes]:
    fs = s3.filesystem()
    return {key: fs.cat_file(key) for key in fs.find(s3.uri(prefix))}


@pytest.mark.slow
def test_run_and_resume_over_s3_leak_no_secret(s3, archive):
    upload_archive(s3, archive)
    args = ["run", s3.uri("images"), "--masks", s3.uri("masks"), "--out", s3.uri("out"),
            "--method", "telea"]
    first = inpaint_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "3 ok" in first.stdout

    outputs = objects(s3, "out")
    relatives = ("a/chelsea.jpg", "a/b/coffee.png", "rocket.png")
    for relative in relatives:
        restored = Image.open(io.BytesIO(outputs[f"{s3.bucket}/out/{relative}"]))
        assert restored.size == Image.open(archive["images"] / relative).size
    before = np.asarray(Image.open(archive["images"] / "rocket.png"))
    after = np.asarray(Image.open(io.BytesIO(outputs[f"{s3.bucket}/out/rocket.png"])))
    hole = np.asarray(Image.open(archive["masks"] / "rocket.png")) > 127
    assert (after[~hole] == before[~hole]).all() and (after[hole] != before[hole]).any()

    rows = manifest.read(s3.uri("out/_manifest")).to_pylist()
    assert sorted(r["relative_path"] for r in rows) == sorted(relatives)
    assert {r["status"] for r in rows} == {"ok"}
    assert all(r["output_uri"].startswith(f"s3://{s3.bucket}/out/") for r in rows)

    second = inpaint_cli(*args)
    assert second.returncode == 0, second.stderr
    assert "3 already done" in second.stdout and " ok" not in second.stdout.split(";")[0]
    assert len(manifest.read(s3.uri("out/_manifest"))) == len(rows), "resume redid work"

    everything = [first.stdout, first.stderr, second.stdout, second.stderr,
                  json.dumps(rows, default=str), *objects(s3, "out")]
    blobs = [text.encode() for text in everything] + list(objects(s3, "out").values())
    for secret in s3.secrets:
        assert not any(secret.encode() in blob for blob in blobs), "a credential leaked"


def test_storage_options_endpoint_instead_of_the_environment(s3, archive, monkeypatch):
    upload_archive(s3, archive)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    settings = RunSettings(images=s3.uri("images"), masks=s3.uri("masks"), out=s3.uri("out"),
                           method="telea", storage_options={"endpoint_url": s3.endpoint})
    rows = restore_items(settings)
    assert {r["status"] for r in rows} == {"ok"}
    assert s3.filesystem().exists(s3.uri("out/a/chelsea.jpg"))
    assert s3.endpoint not in rows[0]["params"], "connection settings are not output params"


@pytest.mark.slow
def test_listing_is_paged_with_no_request_per_key(s3):
    fs = s3.filesystem()
    count = 1_050  # more than one page of 1,000 keys
    fs.pipe({s3.uri(f"images/{i:05d}.png"): b"x" for i in range(count)})
    requests_before = len(s3.requests())
    items = pair(s3.uri("images"), mask=None, masks=None)
    requests = s3.requests()[requests_before:]
    assert len(items) == count
    assert not [r for r in requests if r.startswith("HEAD") and "/images/0" in r]
    pages = [r for r in requests if "list-type=2" in r]
    assert len(pages) == 2, pages  # 1,050 keys: one listing, two pages of at most 1,000


def test_images_that_is_a_file_or_missing_is_a_usage_error(s3):
    s3.filesystem().pipe_file(s3.uri("one/photo.png"), b"x")
    with pytest.raises(UsageError, match="not a single file"):
        pair(s3.uri("one/photo.png"), mask=s3.uri("one/photo.png"))
    with pytest.raises(UsageError, match="IMAGES not found"):
        pair(s3.uri("nowhere"), mask=s3.uri("one/photo.png"))
    with pytest.raises(UsageError, match="IMAGES not found"):
        pair("s3://no-such-bucket-here/images", mask=s3.uri("one/photo.png"))


def test_writes_are_one_put_of_the_finished_bytes(s3):
    fs, path = storage.filesystem(s3.uri("out/photo.png"))
    data = b"\x89PNG" + bytes(3_000_000)
    requests_before = len(s3.requests())
    storage.write_atomic(fs, path, data)
    requests = s3.requests()[requests_before:]
    assert [r.split()[0] for r in requests if "/out/photo.png" in r] == ["PUT"]
    assert not [r for r in requests if "uploads" in r], "no multipart (streamed) upload"
    assert fs.cat_file(path) == data


def test_a_credential_passed_as_a_storage_option_is_refused_and_not_echoed(archive):
    secret = "do-not-print-this-0123456789"
    result = CliRunner().invoke(app, [
        "run", str(archive["images"]), "--masks", str(archive["masks"]),
        "--out", str(archive["out"]),
        "--storage-options", json.dumps({"aws_secret_access_key": secret}),
    ])
    assert result.exit_code == 2
    assert "may not carry credentials" in result.output
    assert secret not in result.output


def test_a_missing_object_is_a_failed_row_and_the_run_goes_on(s3, archive):
    upload_archive(s3, archive)
    s3.filesystem().rm(s3.uri("masks/rocket.png"))
    rows = {r["relative_path"]: r for r in restore_items(RunSettings(
        images=s3.uri("images"), masks=s3.uri("masks"), out=s3.uri("out"), method="telea"))}
    assert rows["rocket.png"]["status"] == "failed"
    assert rows["a/chelsea.jpg"]["status"] == "ok"
    for secret in s3.secrets:
        assert secret not in json.dumps(rows, default=str)


@pytest.mark.slow
def test_a_run_on_storage_that_answers_slowly_overlaps_its_requests_and_completes(
        s3, tmp_path, local_ray):
    """Every request waits 0.2 s at a proxy (a distant bucket): reads ahead and writes
    behind are under way side by side (pipeline/stages.py), and every item gets its one
    row and its whole output."""
    from tests.s3server import FaultyProxy
    from tests.test_cli import inpaint
    from tests.test_runner import recorded, tiny_archive

    images, masks = tiny_archive(tmp_path, 8)
    fs = s3.filesystem()
    fs.put(images, s3.uri("images"), recursive=True)
    fs.put(masks, s3.uri("masks"), recursive=True)
    proxy = FaultyProxy(s3.endpoint, latency=0.2)
    manifest_uri = tmp_path / "manifest"
    try:
        result = inpaint("run", s3.uri("images"), "--masks", s3.uri("masks"), "--out",
                         s3.uri("out"), "--method", "telea", "--manifest", str(manifest_uri),
                         "--no-report", "--storage-options", s3.endpoint_option(proxy.endpoint))
    finally:
        proxy.close()
    assert result.exit_code == 0, result.stderr
    assert recorded(manifest_uri) == {f"photo-{i:02d}.png": "ok" for i in range(8)}
    outputs = objects(s3, "out")
    assert len(outputs) == 8
    for data in outputs.values():
        image = Image.open(io.BytesIO(data))
        image.load()  # whole: a cut file would not decode
        assert max(image.size) == 32
    assert proxy.most_at_once >= 2, "requests were made one after another"
