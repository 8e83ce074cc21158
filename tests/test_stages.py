"""The pixel budget that bounds what an actor holds decoded across its batches, and the
read-ahead that keeps later items' reads under way."""

from __future__ import annotations

import threading
import time

from pipeline.stages import IO_THREADS, PixelBudget, Stages


def test_pixels_over_the_limit_wait_until_enough_are_released():
    budget = PixelBudget()
    budget.acquire(60, limit=100)
    assert not budget.try_acquire(50, limit=100)
    admitted = threading.Event()
    waiter = threading.Thread(target=lambda: (budget.acquire(50, limit=100), admitted.set()))
    waiter.start()
    assert not admitted.wait(0.2)  # 110 would be over the limit
    budget.release(60)
    assert admitted.wait(10)
    waiter.join()
    assert budget.held == 50


def test_a_photo_bigger_than_the_limit_is_let_in_alone():
    budget = PixelBudget()
    assert budget.try_acquire(500, limit=100)  # nothing else held: one big scan fits
    assert not budget.try_acquire(1, limit=100)  # and nothing joins it
    budget.release(500)
    assert budget.try_acquire(1, limit=100) and budget.held == 1


def test_read_ahead_yields_in_order_and_reads_more_ahead_for_small_photos():
    stages = Stages()
    started, release = [], threading.Event()

    def read(item):
        started.append(item)
        release.wait(10)
        return item * 10

    reads = stages.read_ahead(range(20), read, ahead_pixels=1_000)
    first, future = next(reads)  # no photo decoded yet: one read at a time
    release.set()
    assert (first, future.result(timeout=10)) == (0, 0)
    release.clear()
    stages.item_pixels = 10  # small photos: 100 would fit, IO_THREADS is the cap
    second, _ = next(reads)
    deadline = time.monotonic() + 10
    while len(started) < 1 + IO_THREADS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert second == 1 and len(started) == 1 + IO_THREADS
    release.set()
    rest = [(item, future.result(timeout=10)) for item, future in reads]
    assert rest == [(item, item * 10) for item in range(2, 20)]
    stages.item_pixels = 2_000  # a big scan: only the next item is read
    release.clear()
    reads = stages.read_ahead(range(5), read, ahead_pixels=1_000)
    started.clear()
    next(reads)
    assert len(started) <= 1
    release.set()
    assert [item for item, _ in reads] == [1, 2, 3, 4]
