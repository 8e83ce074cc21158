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

from pipeline import runner
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


def assert_at_most_the_killed_writes_left(out: Path) -> None:
    """A SIGKILL between a write's temporary and its rename leaves that hidden temporary
    (known, README "Failures on Ray"): never under an output's name, and no more than the
    killed worker's writes under way."""
    from pipeline.stages import IO_THREADS

    assert len(list(out.glob(".tmp-*"))) <= IO_THREADS
