"""The embedded Ray: a Ray of this machine alone, started and stopped by the command itself.

Two things Ray 2.60 does not do for a local, single-node Ray are done here:

- Bind to loopback. `ray.init(_node_ip_address="127.0.0.1")` and `ray start --head
  --node-ip-address=127.0.0.1` both swap 127.0.0.1 for the machine's LAN address
  (`ray._private.services.resolve_ip_for_localhost`, so that other nodes could join) before
  starting anything, and the GCS, the raylet, every worker and the agents then listen on
  `*` or on that address. Given 127.0.0.1 as it is, every one of them binds to 127.0.0.1
  (tests/test_runner.py checks each listening socket of a real run). No other node can
  join, which an embedded Ray never wants.
- Clean up after a killed command. The GCS and the raylet die with the driver, but Ray's
  dashboard and runtime-env agents outlive a SIGKILLed driver by about a minute. Each start
  records the processes it made (pid and start time) in a file; the next start stops those
  of any record whose command is gone, and only those: a Ray this command did not start is
  never touched, and a pid the system has since given to another process does not match.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import tempfile
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Where each running command records its embedded Ray: one JSON file per driver pid.
RECORDS = Path(tempfile.gettempdir()) / f"inpaint-ray-{getpass.getuser()}"
# Seconds an orphan gets to exit on SIGTERM before it is killed.
TERM_GRACE = 3.0


def start(**options) -> None:
    """`ray.init(**options)` for a new local Ray whose servers all listen on 127.0.0.1,
    after stopping what killed commands left behind; records what it started."""
    import ray
    from ray._private import services

    reap_orphans()
    before = _children()
    resolve = getattr(services, "resolve_ip_for_localhost", None)
    if resolve is not None:  # keep 127.0.0.1 as given (see the module's docstring)
        services.resolve_ip_for_localhost = lambda host: host
    try:
        ray.init(_node_ip_address=LOOPBACK, **options)
    finally:
        if resolve is not None:
            services.resolve_ip_for_localhost = resolve
    address = ray._private.worker.global_worker.node.node_ip_address
    if address != LOOPBACK:  # a Ray release that resolves it elsewhere: say so, once
        log.warning("the embedded Ray runs at %s, not %s: its servers may be reachable from "
                    "the network (token authentication still guards them)", address, LOOPBACK)
    _record(_children() - before)


def stop() -> None:
    """Shut the embedded Ray down and drop its record."""
    import ray

    try:
        ray.shutdown()
    finally:
        _record_path(psutil.Process()).unlink(missing_ok=True)


def reap_orphans() -> list[int]:
    """Stop the processes of every recorded embedded Ray whose command has died; return
    their pids. Records of running commands are left alone."""
    stopped = []
    if not _private(RECORDS):
        return stopped
    for path in sorted(RECORDS.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            driver, processes = record["driver"], record["processes"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours to read
        if _same_process(*driver) is not None:
            continue
        stopped += _stop(_left_over(processes))
        path.unlink(missing_ok=True)
    return stopped


def _children() -> set[tuple[int, float]]:
    """(pid, start time) of every descendant of this process."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            found.add((child.pid, child.create_time()))
    return found


def _record(processes: set[tuple[int, float]]) -> None:
    """Write the processes ray.init started (the GCS, the raylet and their children, agents
    included), each with its start time, under this driver's pid and start time."""
    me = psutil.Process()
    RECORDS.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _private(RECORDS):
        log.warning("%s is not a folder of this user's alone: the embedded Ray is not "
                    "recorded, so a killed run's leftovers will not be stopped", RECORDS)
        return
    path = _record_path(me)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps({"driver": [me.pid, me.create_time()],
                                   "processes": sorted(processes)}))
    os.replace(partial, path)  # a reader never sees half a record


def _private(folder: Path) -> bool:
    """Whether `folder` is ours and writable by no one else: the records in it decide which
    processes get stopped, so a folder another user could write to is never trusted."""
    try:
        status = folder.stat()
    except OSError:
        return False
    owner = os.getuid() if hasattr(os, "getuid") else status.st_uid
    return status.st_uid == owner and not status.st_mode & 0o022


def _record_path(process: psutil.Process) -> Path:
    return RECORDS / f"{process.pid}.json"


def _same_process(pid: int, created: float) -> psutil.Process | None:
    """The process `pid` if it is still the one that started at `created`."""
    try:
        process = psutil.Process(pid)
        if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
            return process
    except psutil.Error:
        pass
    return None


def _left_over(processes: list[list]) -> list[psutil.Process]:
    """The recorded processes still running, and their children (workers started later)."""
    found: dict[int, psutil.Process] = {}
    for pid, created in processes:
        process = _same_process(pid, created)
        if process is None:
            continue
        found[process.pid] = process
        with contextlib.suppress(psutil.Error):
            found.update((child.pid, child) for child in process.children(recursive=True))
    return list(found.values())


def _stop(processes: list[psutil.Process]) -> list[int]:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=TERM_GRACE)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=TERM_GRACE)
    if processes:
        log.info("stopped %d processes of an embedded Ray whose command was killed",
                 len(processes))
    return [process.pid for process in processes]
