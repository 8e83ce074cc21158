"""The mask convention (white > 127 = fill), inversion, sizes, and synthetic masks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.masks import MaskError, decode_mask, encode_mask, hole_fraction, synthetic_mask


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_pixels_above_127_are_holes():
    gray = np.array([[0, 127, 128, 255]], np.uint8)
    assert decode_mask(png(gray), (1, 4)).tolist() == [[False, False, True, True]]


def test_invert_flips_the_convention():
    gray = np.array([[0, 255]], np.uint8)
    assert decode_mask(png(gray), (1, 2), invert=True).tolist() == [[True, False]]


def test_colour_and_16_bit_masks_are_read_as_gray():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = 255
    assert decode_mask(png(rgb), (2, 2)).sum() == 1
    deep = np.array([[0, 65535]], np.uint16)
    assert decode_mask(png(deep), (1, 2)).tolist() == [[False, True]]


def test_size_mismatch_is_an_error_unless_resizing():
    gray = np.zeros((4, 4), np.uint8)
    gray[:2, :2] = 255
    with pytest.raises(MaskError, match="--resize-masks"):
        decode_mask(png(gray), (8, 8))
    resized = decode_mask(png(gray), (8, 8), resize=True)
    assert resized.shape == (8, 8) and resized[:4, :4].all() and not resized[4:, :].any()


def test_garbage_mask_is_a_mask_error():
    with pytest.raises(MaskError, match="mask"):
        decode_mask(b"definitely not a png", (4, 4))


def test_encode_round_trip():
    mask = synthetic_mask("scratch", 40, 60, seed=3)
    assert (decode_mask(encode_mask(mask), (40, 60)) == mask).all()


@pytest.mark.parametrize(("kind", "low", "high"),
                         [("scratch", 0.04, 0.08), ("strokes", 0.09, 0.15), ("blob", 0.13, 0.34)])
def test_synthetic_masks_cover_their_share(kind, low, high):
    fractions = [hole_fraction(synthetic_mask(kind, 384, 384, seed)) for seed in range(4)]
    assert all(low <= f <= high for f in fractions), fractions


def test_synthetic_masks_are_seeded():
    assert (synthetic_mask("strokes", 64, 64, 7) == synthetic_mask("strokes", 64, 64, 7)).all()
    assert (synthetic_mask("strokes", 64, 64, 7) != synthetic_mask("strokes", 64, 64, 8)).any()
