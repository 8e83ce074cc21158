"""Restores as Ray jobs: a thin layer over Ray's Jobs API (`JobSubmissionClient`).

Submits `python -m jobs.restore` with the project as the job's working_dir, and watches,
lists and stops jobs. The Ray auth token is read from Ray's standard places and never shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.discover import UsageError
from pipeline.jobspec import JobSpec
from pipeline.runner import new_run_id

# Paths of the checkout the cluster never needs; .gitignore'd paths are skipped by Ray itself.
UPLOAD_EXCLUDES = [".git", ".venv", "tests", "benchmarks", "docs", "deploy", "restored",
                   "**/__pycache__", "*.egg-info", ".ruff_cache", ".pytest_cache"]
EXIT_STOPPED = 3
EXIT_NOT_READY = 4  # the cluster kept answering "try again later"; not a configuration error
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# In the README's order. Ray's client lets these override its `address` argument, so they are
# read here and hidden from it (see _without_address_variables).
ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
DEFAULT_WAIT_FOR_CLUSTER = 60.0
# Answers of a head that is starting: a proxy or load balancer in front with no backend yet
# (502/503/504), or Ray's own 500 while the head's job agent is not up.
RETRY_LATER_STATUSES = (502, 503, 504)
_STATUS_CODE = re.compile(r"status code (\d{3})")
TOKEN_HELP = ("set RAY_AUTH_TOKEN, point RAY_AUTH_TOKEN_PATH at a file holding it, or put it "
              "in ~/.ray/auth_token (on the head node, `ray get-auth-token` prints it)")


class ClusterError(UsageError):
    """The cluster could not be reached, refused us, or has no such job."""


class ClusterBusy(ClusterError):
    """An answer that means "try again later" (the head is starting); `reason` says which."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class ClusterNotReady(Exception):
    """The cluster still answered "try again later" when the wait for it ran out."""


@dataclass(frozen=True)
class Submitted:
    job_id: str
    created: bool
    status: str


def token_source() -> str | None:
    """Where Ray would read the auth token from (a name, never the token itself)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return os.environ["RAY_AUTH_TOKEN_PATH"]
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def auth_headers() -> dict[str, str]:
    """The token as an HTTP header, read from Ray's standard places in Ray's order.

    Ray 2.60's client attaches it only when RAY_AUTH_MODE=token is set on the *client*
    machine, which a laptop talking to a remote cluster rarely has; so we pass it ourselves.
    Read here rather than through Ray's token loader: that loader's cache is process-wide,
    and resetting it broke the token of a Ray driver running in the same process.
    """
    source = token_source()
    if source is None:
        return {}
    if source == "RAY_AUTH_TOKEN":
        token = os.environ["RAY_AUTH_TOKEN"]
    else:
        try:
            token = Path(source).read_text()
        except OSError as error:  # e.g. RAY_AUTH_TOKEN_PATH names a missing file
            raise ClusterError(f"cannot read the Ray auth token from {source}: "
                               f"{error.strerror}") from None
    token = token.strip()
    return {"authorization": f"Bearer {token}"} if token else {}


def resolve_address(address: str | None) -> str:
    """The Jobs API to talk to: `--address`, else RAY_API_SERVER_ADDRESS, else RAY_ADDRESS,
    else DEFAULT_ADDRESS. Without this, Ray's client would look for a local Ray instead."""
    for candidate in (address, *(os.environ.get(name) for name in ADDRESS_VARIABLES)):
        if candidate:
            return candidate
    return DEFAULT_ADDRESS


@contextlib.contextmanager
def _without_address_variables() -> Iterator[None]:
    """Hide RAY_API_SERVER_ADDRESS and RAY_ADDRESS from Ray's client while it is built: it
    lets them override its `address` argument, which sent an explicit --address's requests,
    auth token included, to the server named in the environment instead."""
    saved = {name: os.environ.pop(name) for name in ADDRESS_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _status_code(error: BaseException) -> int | None:
    """The HTTP status of a failed Jobs API request, from Ray's RuntimeError text or from
    the `requests` error raised by its version check."""
    response = getattr(error, "response", None)
    if response is not None:
        return response.status_code
    found = _STATUS_CODE.search(str(error))
    return int(found.group(1)) if found else None


@contextlib.contextmanager
def _plain_errors(where: str) -> Iterator[None]:
    """Turn the Jobs API's exceptions into one readable line (never with the token); answers
    that mean "try again later" become ClusterBusy, which `Patience` waits out."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError:
        # Which case it is follows from what we sent, not from Ray's wording.
        source = token_source()
        if source is not None:
            raise ClusterError(f"the cluster at {where} rejected the Ray auth token read from "
                               f"{source}; use the token of that cluster ("
                               f"{TOKEN_HELP})") from None
        raise ClusterError(f"the cluster at {where} requires a Ray auth token and none was "
                           f"found: {TOKEN_HELP}") from None
    except (ConnectionError, requests.exceptions.ConnectionError) as error:
        # Also what a head that is still starting answers, hence "busy". Ray's own
        # ConnectionError keeps the requests error it replaced as its context.
        said = f"{error} {error.__context__}".lower()
        reason = "connection refused" if "refused" in said else "cannot connect"
        raise ClusterBusy(f"cannot reach the Ray Jobs API at {where}: is the cluster up, and "
                          "for a remote one is `ray dashboard cluster.yaml` (its SSH tunnel) "
                          "running?", reason=reason) from None
    except (RuntimeError, requests.exceptions.RequestException) as error:
        text, status = str(error), _status_code(error)
        if status == 404:
            raise ClusterError(f"no such job on the cluster at {where}: "
                               f"{text.split(':', 1)[-1].strip()}") from None
        if status in RETRY_LATER_STATUSES or (status == 500 and "try again later" in text):
            reason = text.split(":", 1)[-1].strip().rstrip(".") if status == 500 else (
                f"HTTP {status}")
            raise ClusterBusy(f"the Jobs API at {where} is not ready: {text}",
                              reason=reason) from None
        raise ClusterError(f"the Jobs API at {where} failed: {text}") from None


class Patience:
    """Retry what the cluster answers with "try again later", with backoff, until `seconds`
    have passed since this object was made (one budget for connecting and submitting)."""

    def __init__(self, seconds: float, where: str, note: Callable[[str], Any] = print):
        self.seconds, self.where, self.note = seconds, where, note
        self.deadline = time.monotonic() + seconds
        self.pause = 1.0

    def run(self, operation: Callable[[], Any]):
        while True:
            try:
                return operation()
            except ClusterBusy as busy:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise ClusterNotReady(
                        f"the Ray cluster at {self.where} was not ready after {self.seconds:g}"
                        f" s of waiting ({busy.reason}); submit again later, or wait longer "
                        f"with --wait-for-cluster SECONDS. Last answer: {busy}") from None
                pause = min(self.pause, left)
                self.note(f"the Ray cluster at {self.where} is not ready ({busy.reason}); "
                          f"waiting for it: next try in {pause:.1f} s, giving up "
                          f"{self.seconds:g} s after the first")
                time.sleep(pause)
                self.pause = min(self.pause * 2, 8.0)


class Cluster:
    """One Ray cluster's Jobs API, with readable errors.

    `patience` (for `submit`) waits out a head that answers "try again later"; without it
    such an answer is an error at once.
    """

    def __init__(self, address: str | None = None, patience: Patience | None = None):
        self.address = resolve_address(address)
        self.patience = patience
        # Ray logs each file it leaves out of the upload, that .git is left out, and the
        # closing of every log stream; "Uploading package" stays.
        for name in ("ray._private.runtime_env.packaging", "ray.dashboard.modules.job.sdk",
                     "ray._private.runtime_env.working_dir"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self.client = self._patiently(self._connect)

    def _connect(self):
        from ray.job_submission import JobSubmissionClient

        with _plain_errors(self.address), _without_address_variables():
            return JobSubmissionClient(self.address, headers=auth_headers())

    def _patiently(self, operation: Callable[[], Any]):
        return self.patience.run(operation) if self.patience else operation()

    def _call(self, method: str, *args, **kwargs):
        with _plain_errors(self.address):
            return getattr(self.client, method)(*args, **kwargs)

    @property
    def ray_version(self) -> str | None:
        """The cluster's Ray version, as its Jobs API reported it when we connected."""
        return getattr(self.client, "_server_ray_version", None)  # set by Ray's version check

    def submit(self, spec: JobSpec, submission_id: str | None = None,
               now: datetime | None = None) -> Submitted:
        """Submit `spec`; if the submission id was used already, start nothing new.

        The id is `--submission-id`, else derived from the spec's name and schedule slot,
        so a cron retry of the same slot reports the job it already started. It is fixed
        before the first try, and every try looks the id up before it submits: a retry after
        an attempt that reached the cluster (its answer lost, or a 5xx from a proxy) finds
        that job and starts nothing new.
        """
        job_id = submission_id or derive_submission_id(spec, now)
        if spec.run_id is None:  # the manifest's run id names the Ray job it came from
            spec = spec.model_copy(update={"run_id": job_id})
        request = submit_request(spec, job_id)
        tried = False

        def attempt() -> Submitted:
            nonlocal tried
            existing = self.find(job_id)
            if existing is not None:  # ours if an earlier try of this call reached it
                return Submitted(job_id, tried, str(existing.status))
            tried = True
            try:
                self._call("submit_job", **request)
            except ClusterBusy:
                raise
            except ClusterError as error:
                if "already exists" not in str(error):  # a retry racing another one
                    raise
                return Submitted(job_id, False, str(self.info(job_id).status))
            return Submitted(job_id, True, "PENDING")

        return self._patiently(attempt)

    def find(self, job_id: str):
        try:
            return self.info(job_id)
        except ClusterError as error:
            if "no such job" in str(error):
                return None
            raise

    def info(self, job_id: str):
        return self._call("get_job_info", job_id)

    def logs(self, job_id: str) -> str:
        return self._call("get_job_logs", job_id)

    def stop(self, job_id: str) -> bool:
        """Ask the job to stop; False if it had already ended."""
        return self._call("stop_job", job_id)

    def jobs(self) -> list:
        """Submitted jobs, newest first."""
        from ray.job_submission import JobType

        jobs = [job for job in self._call("list_jobs") if job.type == JobType.SUBMISSION]
        return sorted(jobs, key=lambda job: job.start_time or 0, reverse=True)

    def follow(self, job_id: str, write: Callable[[str], Any]):
        """Stream the job's logs until it ends; return its final details."""

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                write(chunk)

        self.info(job_id)  # a readable error for an unknown job, before the websocket
        with _plain_errors(self.address):
            asyncio.run(tail())
        return self.wait(job_id)

    def wait(self, job_id: str, poll_seconds: float = 0.5):
        """The job's details once it has ended (the log stream can close a moment before)."""
        while True:
            info = self.info(job_id)
            if info.status.is_terminal():
                return info
            time.sleep(poll_seconds)


def derive_submission_id(spec: JobSpec, now: datetime | None = None) -> str:
    """`NAME-SLOT` for a scheduled spec (one job per slot), `NAME-TIME-RANDOM` otherwise."""
    slot = spec.schedule_slot(now)
    return f"{spec.name}-{slot:%Y%m%dT%H%MZ}" if slot else f"{spec.name}-{new_run_id()}"


def submit_request(spec: JobSpec, job_id: str) -> dict[str, Any]:
    """The `JobSubmissionClient.submit_job` arguments for a spec.

    The entrypoint asks for no CPU or GPU of its own: the driver only plans and records, and
    `gpus_per_worker` reaches the restoring actors through the settings.
    """
    payload = spec.model_dump_json(exclude_defaults=True)
    return {
        "entrypoint": f"python -m jobs.restore --spec-json {shlex.quote(payload)}",
        "submission_id": job_id,
        "runtime_env": runtime_env(),
        "metadata": {"inpaint_spec": spec.name, "inpaint_schedule": spec.schedule or "",
                     "inpaint_version": versions()["inpaint"],
                     "inpaint_ray_version": versions()["ray"]},
    }


def versions() -> dict[str, str]:
    """This install's versions of inpaint, Ray and torch (from package metadata: no import)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name, distribution in (("inpaint", "inpaint-pipeline"), ("ray", "ray"),
                               ("torch", "torch")):
        try:
            found[name] = version(distribution)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def version_mismatches(metadata: dict[str, str] | None, cluster_ray: str | None) -> list[str]:
    """What differs between the client that submitted a job, this client and the cluster."""
    metadata, mine = metadata or {}, versions()
    submitted_ray = metadata.get("inpaint_ray_version")
    submitted = metadata.get("inpaint_version")
    problems = []
    if submitted_ray and cluster_ray and submitted_ray != cluster_ray:
        problems.append(f"the job was submitted with Ray {submitted_ray}, the cluster runs "
                        f"Ray {cluster_ray}")
    if cluster_ray and mine["ray"] != cluster_ray and mine["ray"] != submitted_ray:
        problems.append(f"this client has Ray {mine['ray']}, the cluster runs Ray {cluster_ray}")
    if submitted and submitted != mine["inpaint"]:
        problems.append(f"the job runs inpaint {submitted} (the code it was submitted with), "
                        f"this client is inpaint {mine['inpaint']}")
    return problems


def project_root() -> Path | None:
    """The checkout this package runs from, or None when it is installed as a package."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "jobs").is_dir() else None


def runtime_env(root: Path | None = None) -> dict[str, Any]:
    """Make the project importable on the cluster: the checkout as working_dir (relative
    paths in specs, like `examples/images`, resolve inside it), else the two packages."""
    root = root or project_root()
    if root is not None:
        return {"working_dir": str(root), "excludes": UPLOAD_EXCLUDES}
    import jobs
    import pipeline

    return {"py_modules": [str(Path(pipeline.__file__).parent), str(Path(jobs.__file__).parent)]}


def exit_code(info) -> int:
    """`inpaint run`'s exit status for an ended job: 0 succeeded, 1 items failed (or the job
    failed for another reason), 2 a usage or configuration error, 3 stopped, 5 its driver
    stopped because storage refused writes (full, over quota, read-only, denied)."""
    status = str(info.status)
    if status == "SUCCEEDED":
        return 0
    if status == "STOPPED":
        return EXIT_STOPPED
    return info.driver_exit_code if info.driver_exit_code in (1, 2, 5) else 1
