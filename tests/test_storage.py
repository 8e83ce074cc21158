"""Storage: atomic writes, bounded retries, and items whose storage keeps failing.

Failures come from a real fsspec filesystem that fails on purpose (`flaky://`, an
in-memory filesystem that raises the errors object stores raise), driven through the
same `pipeline.restore_items` the CLI's in-process mode uses.
"""

from __future__ import annotations

import errno
import uuid
from collections import Counter
from typing import ClassVar

import fsspec
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from fsspec.implementations.memory import MemoryFileSystem

from pipeline import restore_items, storage
from pipeline.settings import RunSettings


class FlakyFileSystem(MemoryFileSystem):
    """`memory://` that fails reads and writes of chosen paths, a set number of times."""

    protocol = "flaky"
    failures: ClassVar[dict[str, int]] = {}  # path fragment -> failures left (-1: forever)
    calls: ClassVar[Counter] = Counter()
    error: ClassVar[Exception] = ConnectionResetError(errno.ECONNRESET, "Connection reset")

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).removeprefix("flaky://"))

    def _maybe_fail(self, path: str, operation: str) -> None:
        self.calls[(operation, path)] += 1
        for fragment, left in self.failures.items():
            if fragment in path and left != 0:
                self.failures[fragment] = left - 1 if left > 0 else left
                raise self.error

    def cat_file(self, path, start=None, end=None, **kwargs):
        self._maybe_fail(self._strip_protocol(path), "read")
        return super().cat_file(path, start, end, **kwargs)

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        self._maybe_fail(self._strip_protocol(path), "write")
        return super().pipe_file(path, value, mode, **kwargs)


fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)


@pytest.fixture
def flaky(archive, monkeypatch):
    """The sample archive on `flaky://`, retries without waiting, no failures planned yet."""
    monkeypatch.setattr(storage, "RETRY_BASE_SECONDS", 0.0)
    monkeypatch.setattr(FlakyFileSystem, "failures", {})
    monkeypatch.setattr(FlakyFileSystem, "calls", Counter())
    root = f"flaky://{uuid.uuid4().hex[:10]}"
    fs = fsspec.filesystem("flaky")
    for folder in ("images", "masks"):
        fs.put(str(archive[folder]), f"{root}/{folder}", recursive=True)
    yield root
    fs.rm(root, recursive=True)


def run_flaky(root: str) -> dict[str, dict]:
    settings = RunSettings(images=f"{root}/images", masks=f"{root}/masks", out=f"{root}/out",
                           method="telea")
    return {row["relative_path"]: row for row in restore_items(settings)}


def test_transient_failures_are_retried_and_the_item_succeeds(flaky):
    FlakyFileSystem.failures.update({"images/rocket.png": 2, "out/a/chelsea.jpg": 3})
    rows = run_flaky(flaky)
    assert {row["status"] for row in rows.values()} == {"ok"}
    root = flaky.removeprefix("flaky://")
    assert FlakyFileSystem.calls[("read", f"/{root}/images/rocket.png")] == 3
    assert FlakyFileSystem.calls[("write", f"/{root}/out/a/chelsea.jpg")] == 4


def test_storage_that_keeps_failing_is_a_failed_row_and_the_run_goes_on(flaky):
    FlakyFileSystem.failures.update({"out/rocket.png": -1})
    rows = run_flaky(flaky)
    failed = rows["rocket.png"]
    assert (failed["status"], failed["error_kind"]) == ("failed", "storage")
    assert f"gave up after {storage.RETRY_ATTEMPTS} attempts" in failed["error"]
    assert "Connection reset" in failed["error"]
    assert rows["a/chelsea.jpg"]["status"] == rows["a/b/coffee.png"]["status"] == "ok"
    assert not fsspec.filesystem("flaky").exists(f"{flaky}/out/rocket.png")


def test_a_permanent_error_is_not_retried(flaky, monkeypatch):
    monkeypatch.setattr(FlakyFileSystem, "error", PermissionError(errno.EACCES, "Access Denied"))
    FlakyFileSystem.failures.update({"images/rocket.png": -1})
    row = run_flaky(flaky)["rocket.png"]
    assert (row["status"], row["error_kind"]) == ("failed", "storage")
    assert "Access Denied" in row["error"]
    root = flaky.removeprefix("flaky://")
    assert FlakyFileSystem.calls[("read", f"/{root}/images/rocket.png")] == 1


def test_retries_back_off_exponentially_and_stop(monkeypatch):
    delays = []
    monkeypatch.setattr(storage.time, "sleep", delays.append)
    attempts = []

    def always_throttled():
        attempts.append(1)
        raise OSError("503 SlowDown: please reduce your request rate")

    with pytest.raises(storage.StorageError, match="gave up after 4 attempts"):
        storage.with_retries(always_throttled, "read x", attempts=4)
    assert len(attempts) == 4 and len(delays) == 3
    base = storage.RETRY_BASE_SECONDS
    for number, delay in enumerate(delays):
        assert 0.5 * base * 2**number <= delay <= 1.5 * base * 2**number


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "from the server"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (TimeoutError("read timed out"), True),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), True),
        (client_error("SlowDown", 503), True),
        (client_error("InternalError", 500), True),
        (OSError("503 Service Unavailable"), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), True),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), True),
        (client_error("RequestTimeout", 400), True),
        (OSError("HTTP 429 Too Many Requests"), True),
        (FileNotFoundError("s3://bucket/missing.png"), False),
        (PermissionError("Access Denied"), False),
        (client_error("AccessDenied", 403), False),
        (ValueError("bad request"), False),
    ],
)
def test_which_errors_are_transient(error, transient):
    assert storage.is_transient(error) is transient


def test_local_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "deep" / "photo.png"
    fs, path = storage.filesystem(str(target))
    storage.write_atomic(fs, path, b"first")
    storage.write_atomic(fs, path, b"second version")
    assert target.read_bytes() == b"second version"
    assert [p.name for p in target.parent.iterdir()] == ["photo.png"]


@pytest.mark.parametrize("existing", [None, b"the photo as it was"])
def test_a_local_write_that_fails_midway_leaves_nothing_new_behind(tmp_path, monkeypatch,
                                                                     existing):
    target = tmp_path / "photo.png"
    if existing:
        target.write_bytes(existing)

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", disk_full)  # after the bytes went to the temp
    fs, path = storage.filesystem(str(target))
    with pytest.raises(OSError, match="No space left"):
        storage.write_atomic(fs, path, b"x" * 100_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["photo.png"] if existing else [])
    if existing:
        assert target.read_bytes() == existing


def test_an_object_store_write_that_fails_leaves_nothing_at_the_key(monkeypatch):
    monkeypatch.setattr(storage, "RETRY_BASE_SECONDS", 0.0)
    monkeypatch.setattr(FlakyFileSystem, "failures", {"never-written": -1})
    fs, path = storage.filesystem(f"flaky://{uuid.uuid4().hex[:10]}/never-written.png")
    with pytest.raises(storage.StorageError):
        storage.write_atomic(fs, path, b"bytes")
    assert not fs.exists(path)


# --- S3 errors as s3fs itself raises them -------------------------------------------------
# A loopback proxy in front of the moto server answers chosen requests with the errors a busy
# bucket sends; s3fs turns them into its own exceptions (SlowDown -> OSError(EBUSY), ...).
# botocore's and s3fs's own retries are switched off, so every failure reaches our retry.
S3_ERRORS = [
    ("SlowDown", 503, "Please reduce your request rate.", errno.EBUSY),
    ("ServiceUnavailable", 503, "Service is unable to handle request.", errno.EBUSY),
    ("InternalError", 500, "We encountered an internal error. Please try again.",
     errno.EREMOTEIO),
]


@pytest.fixture
def faulty(s3, monkeypatch):
    import s3fs

    from tests.s3server import FaultyProxy

    monkeypatch.setattr(storage, "RETRY_BASE_SECONDS", 0.0)
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # one try per s3fs call
    proxy = FaultyProxy(s3.endpoint)
    options = {"endpoint_url": proxy.endpoint,
               "config_kwargs": {"retries": {"total_max_attempts": 1, "mode": "standard"}}}
    yield s3, proxy, options
    proxy.close()


@pytest.mark.parametrize(("code", "status", "message", "number"), S3_ERRORS)
def test_s3_throttling_and_server_errors_raised_by_s3fs_are_retried(faulty, code, status,
                                                                   message, number):
    s3, proxy, options = faulty
    s3.filesystem().pipe_file(f"{s3.bucket}/photo.png", b"the photo")
    proxy.fail("GET", f"/{s3.bucket}/photo.png", 1, code, status, message)
    fs, path = storage.filesystem(s3.uri("photo.png"), options)
    with pytest.raises(OSError) as raised:  # what s3fs itself makes of the answer
        fs.cat_file(path)
    assert raised.value.errno == number and storage.is_transient(raised.value)
    proxy.fail("GET", f"/{s3.bucket}/photo.png", 3, code, status, message)
    assert storage.read_uri(s3.uri("photo.png"), options) == b"the photo"
    assert proxy.seen[("GET", f"/{s3.bucket}/photo.png")] == 1 + 4
    proxy.fail("PUT", f"/{s3.bucket}/out.png", 2, code, status, message)
    storage.write_uri(s3.uri("out.png"), b"restored", options)
    assert s3.filesystem().cat_file(f"{s3.bucket}/out.png") == b"restored"
    assert proxy.seen[("PUT", f"/{s3.bucket}/out.png")] == 3


def test_a_bucket_that_stays_busy_gives_up_after_the_stated_attempts(faulty):
    s3, proxy, options = faulty
    s3.filesystem().pipe_file(f"{s3.bucket}/photo.png", b"the photo")
    proxy.fail("GET", f"/{s3.bucket}/photo.png", -1, *S3_ERRORS[0][:3])
    with pytest.raises(storage.StorageError,
                       match=f"gave up after {storage.RETRY_ATTEMPTS} attempts"):
        storage.read_uri(s3.uri("photo.png"), options)
    assert proxy.seen[("GET", f"/{s3.bucket}/photo.png")] == storage.RETRY_ATTEMPTS
