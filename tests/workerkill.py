"""Run `pipeline.run` in a thread and SIGKILL one restoring actor mid-run, as the OOM
killer would: the worker-kill tests of loose files and of datasets share it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil

from pipeline import runner, storage
from pipeline.settings import RunSettings


def actor_processes(actor_class: str) -> list[psutil.Process]:
    """Live processes of this test's Ray actors of `actor_class` (Ray names them
    `ray::CLASS...`): descendants of this process only, since the local Ray's raylet is a
    child of its driver, so another run on the machine (a parallel test worker, another
    user's tests) never loses an actor and never stands in for ours."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if f"ray::{actor_class}" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:  # exited while we looked
            pass
    return found


def run_killing_a_worker(settings: RunSettings, actor_class: str, out: Path,
                         written: str) -> runner.Summary:
    """The run's summary; one actor was SIGKILLed once a file matching `written` was in
    `out`. Fails if the run ended before a worker could be killed."""
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=runner.run(settings)))
    thread.start()
    killed, deadline = None, time.monotonic() + 120
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        actors = actor_processes(actor_class)
        if list(out.glob(written)) and actors:
            killed = actors[0].pid
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    thread.join(timeout=300)
    assert killed is not None, "the run ended before a worker could be killed"
    return outcome["summary"]


def leave_killed_writes(out: Path, run_id: str) -> set[Path]:
    """Temporaries in `out` as a SIGKILL between a write's temporary and its rename leaves
    them: one of run `run_id` (so that its sweep has one to remove whether or not the kill
    lands mid-write), one of another run writing into `out` at the same time and one of a
    write outside any run. Returns the two that are not the run's, which it must leave."""
    out.mkdir(parents=True, exist_ok=True)
    ours, theirs, outside = (out / f"{storage.temporary_prefix(tag)}{'0' * 16}"
                             for tag in (run_id, f"{run_id}-b", None))
    for temporary in (ours, theirs, outside):
        temporary.write_bytes(b"half a photo")
    return {theirs, outside}


def assert_only_others_temporaries_left(out: Path, others: set[Path]) -> None:
    """No temporary of the run is left anywhere in `out`, its killed worker's included."""
    assert set(out.rglob(".tmp-*")) == others
