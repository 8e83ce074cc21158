"""Bucketing crops for batched optimisation: equal shapes share one forward pass.

Crops are padded up to a multiple of `BUCKET_STEP` pixels on each side, so crops of
similar size from different photos land in the same bucket; a bucket is split into
chunks that stay under a pixel budget (the device's memory).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

import numpy as np

BUCKET_STEP = 64

Entry = TypeVar("Entry")


def bucket_shape(height: int, width: int) -> tuple[int, int]:
    return (-(-height // BUCKET_STEP) * BUCKET_STEP, -(-width // BUCKET_STEP) * BUCKET_STEP)


def pad(image: np.ndarray, hole: np.ndarray, shape: tuple[int, int]
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, hole, padding) grown to `shape` at the bottom and right; the added pixels
    mirror the crop, are known, and are marked in `padding`."""
    grow = ((0, shape[0] - hole.shape[0]), (0, shape[1] - hole.shape[1]))
    padded_image = np.pad(image, (*grow, (0, 0)), mode="symmetric")
    padded_hole = np.pad(hole, grow, constant_values=False)
    padding = np.pad(np.zeros_like(hole), grow, constant_values=True)
    return padded_image, padded_hole, padding


def unpad(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return image[: shape[0], : shape[1]]


def group(entries: list[Entry], key: Callable[[Entry], Hashable]) -> list[list[Entry]]:
    """Entries with equal keys, in order of first appearance."""
    groups: dict[Hashable, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(key(entry), []).append(entry)
    return list(groups.values())


def chunks(entries: list[Entry], pixels_each: int, budget: int) -> Iterator[list[Entry]]:
    """Runs of at most `budget` pixels (at least one entry each)."""
    size = max(1, budget // max(1, pixels_each))
    for start in range(0, len(entries), size):
        yield entries[start:start + size]
