"""What lets one actor's storage waits overlap its fill: reads ahead and writes behind on
I/O threads, one fill at a time, and a bound on the decoded pixels it holds.

An actor works on up to `BATCHES_AT_ONCE` batches at a time (a threaded Ray actor): while
one batch is filled, the next one's files are read and decoded and the last one's are
encoded and written. Reading and writing wait on storage (an object store's round trip,
an fsync), which releases the GIL, so the waits cost the fill nothing. Why threads inside
the actor and not separate Ray stages: the pixels stay in the process that decoded them
(a 40 MP 16-bit scan is 240 MB to move between processes), and a small photo's fill costs
less than a Ray task or an object-store round trip would.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

# Batches one actor works on at once (its Ray max_concurrency): one being filled, the
# others being read or written.
BATCHES_AT_ONCE = 2
# Reads (and, separately, writes) in flight per actor at most.
IO_THREADS = 8


class PixelBudget:
    """Decoded pixels an actor holds at once, across its batches.

    `acquire(n, limit)` waits until `n` more fit under `limit`; an item bigger than the
    limit is let in alone, when nothing else is held, so a big scan costs the memory of
    one. The limit is given per call (the worker's GROUP_PIXELS, which tests lower).
    """

    def __init__(self):
        self.held = 0
        self._changed = threading.Condition()

    def try_acquire(self, pixels: int, limit: int) -> bool:
        with self._changed:
            if self.held and self.held + pixels > limit:
                return False
            self.held += pixels
            return True

    def acquire(self, pixels: int, limit: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: not self.held or self.held + pixels <= limit)
            self.held += pixels

    def release(self, pixels: int) -> None:
        if not pixels:
            return
        with self._changed:
            self.held -= pixels
            self._changed.notify_all()


class Stages:
    """One actor's I/O threads, fill lock and pixel budget (`pipeline.worker.Context`)."""

    def __init__(self):
        # Separate pools: a write never waits behind reads that wait for the budget.
        self.reads = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="inpaint-read")
        self.writes = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="inpaint-write")
        # One fill at a time: the method's device and thread count are sized for one.
        self.fill_lock = threading.Lock()
        self.budget = PixelBudget()
        # Pixels of the last photo decoded: how many items are worth reading ahead.
        self.item_pixels = 0

    def read_ahead(self, items: Iterable[T], read: Callable[[T], object],
                   ahead_pixels: int) -> Iterator[tuple[T, Future]]:
        """`(item, future of read(item))` in order, with later items' reads already under
        way: as many as `ahead_pixels` holds at the size of the last photo, at least one
        and at most IO_THREADS (so read-ahead bytes stay bounded for big scans too)."""
        pending: deque[tuple[T, Future]] = deque()
        items = iter(items)
        while True:
            ahead = 1 if not self.item_pixels else ahead_pixels // self.item_pixels
            while len(pending) < max(1, min(IO_THREADS, ahead)):
                item = next(items, None)
                if item is None:
                    break
                pending.append((item, self.reads.submit(read, item)))
            if not pending:
                return
            yield pending.popleft()
