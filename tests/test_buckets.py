"""Crops grow to their bucket's shape with known, marked padding, and come back whole."""

from __future__ import annotations

import numpy as np

from pipeline.methods import buckets


def test_padding_is_known_marked_and_removed_again():
    image = np.random.default_rng(0).random((50, 70, 3), dtype=np.float32)
    hole = np.zeros((50, 70), bool)
    hole[10:20, 60:70] = True
    shape = buckets.bucket_shape(*hole.shape)
    assert shape == (64, 128)
    padded, padded_hole, padding = buckets.pad(image, hole, shape)
    assert padded.shape == (64, 128, 3) and padded_hole.shape == padding.shape == shape
    assert not padded_hole[padding].any() and padding.sum() == 64 * 128 - 50 * 70
    assert np.array_equal(padded[50:52, :70], image[[49, 48], :])  # mirrored, not black
    assert np.array_equal(buckets.unpad(padded, hole.shape), image)


def test_chunks_stay_under_the_pixel_budget_with_at_least_one_crop():
    entries = list(range(7))
    assert [len(c) for c in buckets.chunks(entries, 100, 300)] == [3, 3, 1]
    assert [len(c) for c in buckets.chunks(entries, 1000, 300)] == [1] * 7
    assert buckets.group(["ab", "c", "de", "f"], len) == [["ab", "de"], ["c", "f"]]
