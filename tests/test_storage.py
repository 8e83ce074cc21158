"""Storage: atomic writes, bounded retries, and items whose storage keeps failing.

Failures come from a real fsspec filesystem that fails on purpose (`flaky://`, an
in-memory filesystem that raises the errors object stores raise), driven through the
same `pipeline.restore_items` the CLI's in-process mode uses.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import stat
import uuid
from collections import Counter
from typing import ClassVar

import fsspec
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from fsspec.implementations.memory import MemoryFileSystem

from pipeline import manifest, restore_items, storage
from pipeline.discover import UsageError
from pipeline.runner import plan
from pipeline.settings import RunSettings
from tests.disks import file_modes, tmpfs, umask


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
    with pytest.raises(storage.WriteRefused, match="no space left on device writing"):
        storage.write_atomic(fs, path, b"x" * 100_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["photo.png"] if existing else [])
    if existing:
        assert target.read_bytes() == existing


def killed_mid_write(target, run_id: str | None) -> None:
    """Write `target` in a child process SIGKILLed once its bytes are in the temporary and
    before the rename, as the OOM killer kills a worker: what is left is what it leaves."""
    def write() -> None:
        storage.os.fsync = lambda descriptor: os.kill(os.getpid(), signal.SIGKILL)
        storage.write_uri(str(target), b"half a scan", run_id=run_id)

    child = multiprocessing.get_context("fork").Process(target=write)
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL


def test_a_run_removes_only_its_own_killed_writes(tmp_path):
    out = tmp_path / "out"
    killed_mid_write(out / "ours.png", "run-a")
    killed_mid_write(out / "theirs.png", "run-a-b")  # a run writing there at the same time
    killed_mid_write(out / "reviewed.png", None)  # a write outside any run
    (out / "restored.png").write_bytes(b"a finished output")
    left = {path.name for path in out.iterdir()}
    [ours] = [name for name in left if name.startswith(storage.temporary_prefix("run-a"))]
    assert len([name for name in left if name.startswith(".tmp-")]) == 3
    assert not {"ours.png", "theirs.png", "reviewed.png"} & left, "a partial output was seen"

    folders = [str(out), str(tmp_path / "never-written"), "memory://no-temporaries-there"]
    assert storage.remove_temporaries(folders, "run-a") == 1
    assert {path.name for path in out.iterdir()} == left - {ours}
    assert storage.remove_temporaries(folders, "run-a") == 0


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
    # The README's figure: 5 attempts in all, so 4 retries.
    assert proxy.seen[("GET", f"/{s3.bucket}/photo.png")] == storage.RETRY_ATTEMPTS == 5


# --- Local disks as their users expect: file modes, full and read-only filesystems -----


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_local_files_get_the_mode_a_plain_open_gives_under_the_umask(tmp_path, mask):
    with umask(mask):
        (tmp_path / "plain").write_bytes(b"x")
        expected = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
        fs, path = storage.filesystem(str(tmp_path / "new.png"))
        storage.write_atomic(fs, path, b"new")
        replaced = tmp_path / "replaced.png"
        replaced.write_bytes(b"old")
        replaced.chmod(0o600)
        storage.write_atomic(fs, str(replaced), b"new bytes")
    assert expected == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "new.png").stat().st_mode) == expected
    assert stat.S_IMODE(replaced.stat().st_mode) == expected


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_restored_photos_detected_masks_manifest_and_report_follow_the_umask(archive, mask):
    from pipeline import report

    out = archive["out"]
    settings = RunSettings(images=str(archive["images"]), masks="auto", out=str(out),
                           method="telea")
    with umask(mask):
        rows = restore_items(settings)
        writer = manifest.ManifestWriter(settings.manifest_uri(), "run1")
        writer.add(rows)
        writer.flush()
        report.build(settings.manifest_uri(), str(out / "_report"), run_id="run1", sample=3)
    assert {row["status"] for row in rows} <= {"ok", "skipped"}  # skipped: nothing detected
    modes = file_modes(out)
    kinds = {"photos": "a/chelsea.jpg", "masks": "_masks/a/chelsea.png",
             "manifest": "_manifest/part-run1-00000.parquet", "report": "_report/index.html"}
    assert set(kinds.values()) <= set(modes), sorted(modes)
    assert {name: oct(m) for name, m in modes.items() if m != 0o666 & ~mask} == {}


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
        # s3fs: AccessDenied becomes a PermissionError without errno, unknown codes OSError(EIO)
        (PermissionError("Access Denied"), "permission denied (Access Denied)"),
        (OSError(errno.EIO, "An error occurred (QuotaExceeded) when calling the PutObject "
                            "operation: Quota exceeded"), "the object store is full or over quota"),
        (OSError(errno.EIO, "An error occurred (XMinioStorageFull) when calling the PutObject "
                            "operation"), "the object store is full or over quota"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset"), None),
        (FileNotFoundError(errno.ENOENT, "No such file"), None),
        (storage.StorageError("write x: gave up after 5 attempts"), None),
        (ValueError("bad bytes"), None),
    ],
)
def test_which_errors_mean_the_location_refuses_writes(error, reason):
    refused = storage.refusal(error, "s3://bucket/out/x.png")
    if reason is None:
        assert refused is None
    else:
        assert refused.reason.startswith(reason)
        assert str(refused).endswith("writing s3://bucket/out/x.png")


def test_a_refusal_is_found_through_the_error_it_was_raised_from():
    try:
        try:
            raise client_error("QuotaExceeded", 403)
        except ClientError as boto:
            raise OSError(errno.EIO, "the object store said no") from boto
    except OSError as translated:
        assert storage.refusal(translated, "s3://b/k") is not None


def test_a_full_disk_refuses_the_write_and_leaves_no_partial_file(tmp_path):
    with tmpfs(tmp_path / "disk", "size=64k") as disk:
        fs, _ = storage.filesystem(str(disk))
        written = []
        with pytest.raises(storage.WriteRefused) as refused:
            for number in range(100):
                storage.write_atomic(fs, f"{disk}/photo-{number:02d}.png", bytes([number]) * 3000)
                written.append(number)
        assert refused.value.reason == "no space left on device"
        assert refused.value.location == f"{disk}/photo-{len(written):02d}.png"
        assert 5 < len(written) < 100
        assert sorted(p.name for p in disk.iterdir()) == [f"photo-{n:02d}.png" for n in written]
        assert all((disk / f"photo-{n:02d}.png").read_bytes() == bytes([n]) * 3000
                   for n in written)


def test_writability_is_checked_with_a_real_write_that_leaves_nothing(tmp_path):
    storage.check_writable(str(tmp_path / "not" / "there" / "yet"))
    assert list(tmp_path.iterdir()) == []  # checked in its nearest parent, nothing created
    (tmp_path / "a-file").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        storage.check_writable(str(tmp_path / "a-file" / "out"))
    with (tmpfs(tmp_path / "ro", "ro,size=1m") as read_only,
          pytest.raises(storage.WriteRefused, match="read-only file system")):
        storage.check_writable(str(read_only / "out"))


def test_an_object_store_that_denies_writes_is_refused_before_any_work(flaky, monkeypatch):
    monkeypatch.setattr(FlakyFileSystem, "error", PermissionError("Access Denied"))
    FlakyFileSystem.failures.update({"out/.inpaint-write-check": -1})
    settings = RunSettings(images=f"{flaky}/images", masks=f"{flaky}/masks",
                           out=f"{flaky}/out", method="telea")
    with pytest.raises(UsageError, match=r"^OUT is not writable: permission denied "
                                         r"\(Access Denied\) \(flaky://"):
        plan(settings, in_process=True)
    assert not [key for key in FlakyFileSystem.calls if key[0] == "read"]


@pytest.mark.parametrize(
    "error",
    [PermissionError("Access Denied"),
     OSError(errno.EIO, "An error occurred (QuotaExceeded) when calling the PutObject "
                        "operation: The bucket is over its quota")],
    ids=["denied", "quota"],
)
def test_an_object_store_refusing_writes_mid_run_stops_the_items_after_it(flaky, monkeypatch,
                                                                         error):
    monkeypatch.setattr(FlakyFileSystem, "error", error)
    FlakyFileSystem.failures.update({"out/a/chelsea.jpg": -1})  # the second of three
    rows = run_flaky(flaky)
    assert rows["a/b/coffee.png"]["status"] == "ok"
    for relative in ("a/chelsea.jpg", "rocket.png"):
        assert (rows[relative]["status"], rows[relative]["error_kind"]) == ("failed", "refused")
        assert rows[relative]["error"].startswith(("permission denied (Access Denied)",
                                                   "the object store is full or over quota "
                                                   "(An error occurred (QuotaExceeded)"))
        assert rows[relative]["error"].endswith("/out/a/chelsea.jpg")
    root = flaky.removeprefix("flaky://")
    # Stopped promptly: the photo after the refusal was not even read.
    assert ("read", f"/{root}/images/rocket.png") not in FlakyFileSystem.calls
    assert FlakyFileSystem.calls[("write", f"/{root}/out/a/chelsea.jpg")] == 1
