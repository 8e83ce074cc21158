"""Patch synthesis (pipeline.methods.patches): known pixels kept, seeded, texture carried
into the hole where a smooth fill cannot, on one channel and three."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from skimage import data

from pipeline.methods import load_method
from pipeline.methods.classical import biharmonic_fill
from pipeline.methods.hallucinate import wide_holes
from pipeline.methods.patches import NoIntactPatch, Synthesis, patch_fill
from tests.conftest import small_photo


def stripes(size: int = 96) -> np.ndarray:
    """Slanted bars 10 px apart: dark 0.1, light 0.9."""
    rows, columns = np.mgrid[0:size, 0:size]
    bars = np.sin(2 * np.pi * (columns + 0.5 * rows) / 10) > 0
    return np.where(bars, 0.9, 0.1).astype(np.float32)[:, :, None]


def brick() -> np.ndarray:
    """scikit-image's brick wall (gray), 128 px."""
    return (data.brick()[:128, :128] / 255).astype(np.float32)[:, :, None]


def colour(plane: np.ndarray) -> np.ndarray:
    """Three channels that differ: the plane, its inverse, and a fixed tint."""
    return np.concatenate([plane, 1 - plane, 0.5 * plane + 0.2], axis=2)


def square_hole(shape: tuple[int, ...], side: int = 32) -> np.ndarray:
    hole = np.zeros(shape[:2], bool)
    top, left = shape[0] // 2 - side // 2, shape[1] // 2 - side // 2
    hole[top:top + side, left:left + side] = True
    return hole


def damaged(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    broken = image.copy()
    broken[hole] = 1.0  # white, as a stain or a tear scans
    return broken


def hole_error(filled: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    return float(np.abs(filled[hole] - truth[hole]).mean())


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("texture", ["stripes", "brick"])
def test_a_periodic_texture_is_rebuilt_where_a_smooth_fill_smears_it(texture, channels):
    """Measured when written (mean absolute error in the hole, 0-1 scale): stripes 0.000
    (biharmonic 0.36), brick 0.018 (biharmonic 0.064), alike on three channels."""
    plane = stripes() if texture == "stripes" else brick()
    truth = plane if channels == 1 else colour(plane)
    hole = square_hole(truth.shape)
    broken = damaged(truth, hole)
    smooth = hole_error(biharmonic_fill(broken, hole), truth, hole)
    ours = hole_error(patch_fill(broken, hole, seed=0), truth, hole)
    # The margin a smooth fill cannot meet: it averages bars into gray, mortar into brick.
    assert ours < 0.4 * smooth, (ours, smooth)
    if texture == "stripes":
        assert smooth > 0.2 and ours < 0.02, (ours, smooth)


@pytest.mark.parametrize("channels", [1, 3])
def test_known_pixels_never_change_and_the_hole_is_in_range(channels):
    photo = small_photo("chelsea", 96).astype(np.float32) / 255
    truth = photo.mean(axis=2, keepdims=True) if channels == 1 else photo
    hole = square_hole(truth.shape, 24)
    hole[55, 5:90] = True  # a scratch, and holes that reach the frame's edge
    hole[:6, :12] = True
    broken = damaged(truth, hole)
    filled = patch_fill(broken, hole, seed=3)
    assert filled.shape == truth.shape and filled.dtype == np.float32
    assert np.array_equal(filled[~hole], broken[~hole])
    assert filled.min() >= 0 and filled.max() <= 1
    # Copied from the photo, not left white.
    assert hole_error(filled, truth, hole) < 0.5 * hole_error(broken, truth, hole)


def test_the_seed_decides_the_fill():
    photo = small_photo("chelsea", 96).astype(np.float32) / 255
    hole = square_hole(photo.shape, 30)
    broken = damaged(photo, hole)
    first, again = (patch_fill(broken, hole, seed=7) for _ in range(2))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, patch_fill(broken, hole, seed=8))


def test_the_method_row_is_seeded_and_fills_8_bit_photos():
    photo = small_photo("chelsea", 96)
    hole = square_hole(photo.shape, 30)
    broken = photo.copy()
    broken[hole] = 255
    first = load_method("patch", seed=5)(broken, hole).pixels
    assert np.array_equal(first, load_method("patch", seed=5)(broken, hole).pixels)
    assert np.array_equal(first[~hole], broken[~hole])
    error = np.abs(first[hole].astype(float) - photo[hole]).mean()
    assert error < 0.5 * np.abs(broken[hole].astype(float) - photo[hole]).mean()


def test_the_optimiser_can_start_from_the_patch_fill():
    """`init="patch"`: with no optimisation steps the wide holes hold the patch fill."""
    truth = (stripes() * 255).astype(np.uint8)[:, :, 0]
    hole = square_hole(truth.shape)
    broken = truth.copy()
    broken[hole] = 255
    filled = load_method("tv", {"init": "patch", "steps": 0}, seed=2)(broken, hole).pixels
    expected = patch_fill(damaged(truth[:, :, None] / np.float32(255), hole), hole, seed=2)
    assert np.array_equal(wide_holes(hole, 4.5)[0], hole)  # all of it is a wide hole
    assert np.abs(filled[hole].astype(float) - expected[hole, 0] * 255).max() <= 0.5
    assert np.abs(filled[hole].astype(float) - truth[hole]).mean() < 5


def test_patch_detail_adds_the_synthesis_texture_to_the_smooth_start():
    """`init="patch-detail"`: biharmonic plus the patch fill's fine detail; on bars the
    detail brings back some of what the smooth fill averaged away. Measured when written
    (mean absolute error in the hole, levels): biharmonic 92, patch-detail 66."""
    truth = (stripes() * 255).astype(np.uint8)[:, :, 0]
    hole = square_hole(truth.shape)
    broken = truth.copy()
    broken[hole] = 255
    starts = {init: load_method("tv", {"init": init, "steps": 0}, seed=2)(broken, hole).pixels
              for init in ("biharmonic", "patch-detail")}
    assert all(np.array_equal(start[~hole], broken[~hole]) for start in starts.values())
    error = {init: float(np.abs(start[hole].astype(float) - truth[hole]).mean())
             for init, start in starts.items()}
    assert error["patch-detail"] < 0.8 * error["biharmonic"], error


def test_holes_that_leave_no_intact_patch_are_a_clear_error():
    photo = small_photo("chelsea", 48).astype(np.float32) / 255
    hole = np.zeros(photo.shape[:2], bool)
    hole[::5, :] = True  # every 7x7 square holds a damaged row
    with pytest.raises(NoIntactPatch, match="no intact 7x7 patch"):
        patch_fill(damaged(photo, hole), hole)
    with pytest.raises(ValueError, match="smaller than one"):
        patch_fill(photo[:5, :5], hole[:5, :5], settings=Synthesis(patch_size=7))


def test_patch_size_must_be_odd():
    with pytest.raises(ValidationError, match="must be odd"):
        load_method("patch", {"patch_size": 6})
