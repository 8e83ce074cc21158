"""Storage access through fsspec: open any URI, read with retries, write atomically.

Every byte the pipeline reads or writes goes through here, so the same code serves a
laptop folder, `memory://` in tests and an `s3://` bucket on a cluster.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_ATTEMPTS = 5
RETRY_BASE_SECONDS = 0.2
_TRANSIENT_MARKERS = (
    "timeout",
    "timed out",
    "throttl",
    "slowdown",
    "slow down",
    "too many requests",
    "service unavailable",
    "internal error",
    "internalerror",
    "bad gateway",
    "connection reset",
    "connection aborted",
    "could not connect",
    "server disconnected",
    "requesttimeout",
    " 429",
    " 500",
    " 502",
    " 503",
    " 504",
)

# What s3fs raises for S3's answers: it turns the botocore error into an OSError by code,
# SlowDown, ServiceUnavailable, OperationAborted and 503 into EBUSY, InternalError and 500
# into EREMOTEIO, with the server's message ("Please reduce your request rate.") as text;
# the rest are the socket's own transient errors.
_TRANSIENT_ERRNOS = frozenset({
    errno.EBUSY, getattr(errno, "EREMOTEIO", errno.EIO), errno.EAGAIN, errno.ETIMEDOUT,
    errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED,
})
# botocore's own codes for the same, should one reach us untranslated.
_TRANSIENT_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
})


class StorageError(RuntimeError):
    """A storage operation that failed for good (after retries where they make sense)."""


class WriteRefused(StorageError):
    """A location that refuses writes for good: full, over quota, read-only or denied.

    Every later write there would fail the same way, so a run stops at the first one
    instead of failing item after item. `str()` says what and where, in words.
    """

    def __init__(self, location: str, reason: str):
        super().__init__(f"{reason} writing {location}")
        self.location, self.reason = location, reason


# The errors of a local write that every later write to the same place would repeat.
_REFUSING_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# What S3-compatible stores answer when a bucket is full or over its quota (Ceph RGW,
# MinIO); s3fs turns codes it does not know into OSError(EIO) with the code in the text.
_FULL_STORE_CODES = ("QuotaExceeded", "XMinioStorageFull", "XMinioAdminBucketQuotaExceeded",
                     "InsufficientStorage", "StorageFull")


def filesystem(uri: str, storage_options: dict[str, Any] | None = None):
    """Return `(fs, path)` for a URI; a plain path is a local path.

    For `s3://`, botocore itself reads the endpoint from `AWS_ENDPOINT_URL` (or
    `AWS_ENDPOINT_URL_S3`) and credentials from its standard chain, in every process,
    Ray workers included; `storage_options` (e.g. `{"endpoint_url": ...}`) override it.
    Listings (`fs.find`) are paged by the backend: s3fs asks for 1,000 keys per request.
    """
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return fs, path


def full_uri(fs, path: str) -> str:
    """A URI a person (and fsspec) can use again: local paths stay plain paths."""
    if isinstance(fs, LocalFileSystem):
        return path
    return fs.unstrip_protocol(path)


def is_local(fs) -> bool:
    return isinstance(fs, LocalFileSystem)


def is_transient(error: BaseException) -> bool:
    """Timeouts, 5xx and throttling are worth another try; missing keys and denials are not."""
    if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError):
        return False
    if isinstance(error, TimeoutError | ConnectionError):
        return True
    for cause in _causes(error):
        if isinstance(cause, OSError) and cause.errno in _TRANSIENT_ERRNOS:
            return True
        if _transient_response(getattr(cause, "response", None)):
            return True
    text = f" {type(error).__name__} {error}".lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


def _causes(error: BaseException):
    """The error and what it was raised from (s3fs keeps botocore's error as the cause)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__


def _transient_response(response) -> bool:
    """A botocore error response that says: throttled, or the server failed for now."""
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return code in _TRANSIENT_CODES or status in (429, 500, 502, 503, 504)


def with_retries(operation: Callable[[], T], what: str, attempts: int = RETRY_ATTEMPTS) -> T:
    """Run `operation`, retrying transient errors with jittered exponential backoff.

    Permanent errors (missing key, denied) are raised as they are, at once; a transient
    error still there after `attempts` tries becomes a `StorageError` saying so.
    """
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except Exception as error:
            if not is_transient(error):
                raise
            if attempt == attempts:
                raise StorageError(
                    f"{what}: gave up after {attempts} attempts: {type(error).__name__}: {error}"
                ) from error
            delay = RETRY_BASE_SECONDS * 2 ** (attempt - 1) * (0.5 + random.random())
            log.warning("%s: transient error (%s), retry %d in %.1fs", what, error, attempt, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def read_bytes(fs, path: str) -> bytes:
    return with_retries(lambda: fs.cat_file(path), f"read {path}")


def read_uri(uri: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """`read_bytes` for a URI: the whole object, with retries."""
    fs, path = filesystem(uri, storage_options)
    return read_bytes(fs, path)


def read_parquet(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """A whole Parquet file held in memory, read on this thread. `pq.read_table` goes
    through Arrow's dataset scanner, whose pool threads can still be tidying up when the
    process exits: 1-2% of short driver runs then died at exit with SIGABRT ("terminate
    called without an active exception", apache/arrow#39862) after their work was done."""
    return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns, use_threads=False)


def write_uri(uri: str, data: bytes, storage_options: dict[str, Any] | None = None,
              run_id: str | None = None) -> None:
    """`write_atomic` for a URI."""
    fs, path = filesystem(uri, storage_options)
    write_atomic(fs, path, data, run_id)


def write_atomic(fs, path: str, data: bytes, run_id: str | None = None) -> None:
    """Write so that no reader ever sees a partial file at `path`.

    Local: a temporary file in the same folder, fsynced, then renamed over the target; it
    gets the mode a plain `open()` gives a new file (0666 less the umask). A run's workers
    give its `run_id`, which the temporary's name carries (`temporary_prefix`): what a
    process killed before the rename leaves, that run can find and remove
    (`remove_temporaries`) without touching another run's writes under way.
    Object stores: one PUT of the finished bytes (`pipe_file`), never a streamed upload;
    nothing to leave but, from 100 MiB on (s3fs's multipart upload), an unfinished upload
    that no listing shows (a bucket's lifecycle rule aborts those).
    A replayed write (Ray retrying a task) replaces the file with identical bytes.
    A location that refuses the write for good (full, over quota, read-only, denied)
    raises `WriteRefused`.
    """
    try:
        if is_local(fs):
            _write_local_atomic(path, data, run_id)
        else:
            with_retries(lambda: fs.pipe_file(path, data), f"write {path}")
    except Exception as error:
        refused = refusal(error, full_uri(fs, path))
        if refused is None:
            raise
        raise refused from error


def check_writable(uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Write and remove a probe where `uri`'s files will go, so that a location which
    refuses writes is found before any work rather than at the first item.

    Local: an empty temporary file in `uri`, or in its nearest existing parent when it is
    not there yet (the run creates it), made as the real writes make theirs. A real write
    rather than `os.access`, which cannot see quotas or object stores. Raises
    `WriteRefused`, or the storage's own error (a missing bucket, a path through a file).
    """
    fs, path = filesystem(uri, storage_options)
    try:
        if is_local(fs):
            _probe_local(path)
        else:
            _probe_object_store(fs, path)
    except Exception as error:
        refused = refusal(error, uri)
        if refused is None:
            raise
        raise refused from error


def _probe_local(path: str) -> None:
    folder = os.path.abspath(path)
    while not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", folder)
    handle, temporary = _create_temporary(folder)
    os.close(handle)
    os.unlink(temporary)


def _probe_object_store(fs, path: str) -> None:
    probe = join(path, f".inpaint-write-check-{uuid.uuid4().hex[:12]}")
    with_retries(lambda: fs.pipe_file(probe, b""), f"write {probe}")
    try:
        with_retries(lambda: fs.rm_file(probe), f"remove {probe}")
    except Exception as error:  # allowed to write but not to delete: the run can go on
        log.warning("could not remove the write check %s: %s", full_uri(fs, probe), error)


def refusal(error: BaseException, location: str) -> WriteRefused | None:
    """`WriteRefused` for `location` when `error` (or what it was raised from) says the
    location refuses writes for good; None for anything else."""
    for cause in _causes(error):
        if isinstance(cause, OSError) and cause.errno in _REFUSING_ERRNOS:
            return WriteRefused(location, _REFUSING_ERRNOS[cause.errno])
        if isinstance(cause, PermissionError):  # s3fs: AccessDenied, without an errno
            return WriteRefused(location, f"permission denied ({cause})")
        if any(code in str(cause) for code in _FULL_STORE_CODES):
            said = getattr(cause, "strerror", None) or cause  # without "[Errno 5]"
            return WriteRefused(location, f"the object store is full or over quota ({said})")
    return None


def temporary_prefix(run_id: str | None = None) -> str:
    """How the names of a run's local temporaries begin: `.tmp-<tag>-`, the tag 12 hex digits
    of the run id's SHA-256 (a run id is free text: no slash or glob character gets into a
    file name, and run `a`'s prefix is never the start of run `a-b`'s); `.tmp-` for a write
    outside a run, whose name is then `.tmp-` and 16 hex digits."""
    if run_id is None:
        return ".tmp-"
    return f".tmp-{hashlib.sha256(run_id.encode()).hexdigest()[:12]}-"


def remove_temporaries(folders: Iterable[str], run_id: str,
                       storage_options: dict[str, Any] | None = None) -> int:
    """Delete run `run_id`'s temporaries from `folders` (one listing each, not recursive),
    which its processes killed between a write's temporary and its rename left; returns how
    many. Others' temporaries (another run's, a write outside a run) stay: call it once the
    run's own writes are over. A folder that is not there is skipped; object stores hold no
    temporaries (`write_atomic`)."""
    prefix, removed = temporary_prefix(run_id), 0
    for folder in folders:
        fs, path = filesystem(folder, storage_options)
        if not is_local(fs):
            continue
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:  # removed meanwhile (the same run, swept twice)
                    pass
    return removed


def _create_temporary(folder: str, run_id: str | None = None) -> tuple[int, str]:
    """A new file in `folder` with a unique hidden name (`temporary_prefix`), created as a
    plain `open()` creates one: mode 0666 less the process's umask. (`tempfile.mkstemp`
    makes it 0600, which the rename would carry to the target, hiding it from the archive's
    other readers.)"""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    prefix = temporary_prefix(run_id)
    while True:
        temporary = os.path.join(folder, f"{prefix}{uuid.uuid4().hex[:16]}")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:  # as likely as a uuid collision, but never overwrite
            continue


def _write_local_atomic(path: str, data: bytes, run_id: str | None) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    handle, temporary = _create_temporary(folder, run_id)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def join(base: str, relative: str) -> str:
    return base.rstrip("/") + "/" + relative.lstrip("/")
