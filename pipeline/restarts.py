"""Actors Ray restarted mid-run: which batches their dead processes had, and removing what
those processes' cut-off writes left.

A process SIGKILLed (the OOM killer) between a write's temporary and its rename leaves the
temporary, named after the run (`storage.temporary_prefix`). Ray restarts the actor and
replays the batches it had, which write their outputs again; the temporaries stay. The
driver keeps the folders of the replayed batches and, once the run's writes are over,
removes this run's temporaries there and nowhere else: a restart costs a listing of each
of those folders (a few batches' worth), never one of OUT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from pipeline import storage
from pipeline.worker import RESTARTED

log = logging.getLogger(__name__)


class Replays:
    """The folders this run's dead actor processes may have left temporaries in.

    A restarted process marks its rows (`worker.RESTARTED`). The first rows the driver gets
    from such a process (its `worker`, host:pid, not seen before) say the one before it
    died; the batches that one had were replayed, and each is either this batch or still
    running on the same actor: `noticed` is given both, and keeps their folders
    (`folders_of` a batch).
    """

    def __init__(self, folders_of: Callable[[Any], Iterable[str]]):
        self.folders_of = folders_of
        self.folders: set[str] = set()
        self._restarted: set[str] = set()

    def noticed(self, rows: list[dict[str, Any]], batches: Iterable[Any]) -> None:
        """Take `RESTARTED` out of a batch's rows; after an actor's restart, keep the folders
        of `batches`: this batch and those still running on its actor."""
        marked = [row.pop(RESTARTED, False) for row in rows]  # every row's, not the first's
        if not any(marked) or rows[0]["worker"] in self._restarted:
            return
        self._restarted.add(rows[0]["worker"])
        for batch in batches:
            self.folders.update(self.folders_of(batch))

    def sweep(self, run_id: str, storage_options: dict[str, Any] | None = None) -> int:
        """Remove run `run_id`'s temporaries from the kept folders; call it when no write of
        the run is under way. How many were removed; an error is logged, not raised: the
        outputs are written and recorded, what stays is litter."""
        if not self.folders:
            return 0
        try:
            removed = storage.remove_temporaries(sorted(self.folders), run_id, storage_options)
        except (OSError, storage.StorageError) as error:
            log.warning("run %s: could not remove the temporaries of killed workers' writes "
                        "in %d folders: %s", run_id, len(self.folders), error)
            return 0
        log.info("run %s: removed %d temporaries of writes killed workers cut off, from %d "
                 "folders", run_id, removed, len(self.folders))
        return removed
