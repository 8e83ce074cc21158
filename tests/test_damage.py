"""Synthetic print damage: seeded, realistic in size and tone, with an honest true mask."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.damage import (
    KINDS,
    PRINT_KINDS,
    DamageParams,
    PrintDamageParams,
    add_damage,
    add_print_damage,
    mask_scores,
    synthetic_infrared,
)
from tests.conftest import small_photo


def test_same_seed_same_damage_and_other_seed_other_damage():
    photo = small_photo("chelsea", 128)
    first, again, other = (add_damage(photo, seed=s) for s in (3, 3, 4))
    assert np.array_equal(first.image, again.image) and np.array_equal(first.mask, again.mask)
    assert not np.array_equal(first.mask, other.mask)


def test_mask_marks_exactly_the_pixels_that_changed_visibly():
    photo = small_photo("coffee", 160)
    damage = add_damage(photo, seed=1)
    change = np.abs(damage.image.astype(int) - photo.astype(int)).max(axis=2)
    assert damage.mask.any()
    assert (change[damage.mask] >= 7).all()  # 8/255 before rounding
    assert change[~damage.mask].max() <= 8
    assert damage.image.dtype == photo.dtype and damage.image.shape == photo.shape


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_is_drawn_and_labelled(kind):
    photo = small_photo("rocket", 200)
    damage = add_damage(photo, seed=2, kinds=(kind,),
                        params=DamageParams(hairs=(3, 3), dust=(60, 60)))
    labels = set(np.unique(damage.kinds[damage.mask]).tolist())
    assert labels == {KINDS[kind]}


def test_defects_are_thin_dust_is_small_and_damage_is_sparse():
    photo = small_photo("chelsea", 400)
    dust = add_damage(photo, seed=5, kinds=("dust",))
    scratch = add_damage(photo, seed=5, kinds=("scratch",))
    import cv2

    count, _, stats, _ = cv2.connectedComponentsWithStats(dust.mask.astype(np.uint8), 8)
    # 1-4 px specks, grown by at most a pixel or two of scanner blur on each side.
    assert count > 1 and stats[1:, cv2.CC_STAT_WIDTH].max() <= 9
    thickness = cv2.distanceTransform(scratch.mask.astype(np.uint8), cv2.DIST_L2, 3).max()
    assert thickness <= 3.5
    assert 0 < add_damage(photo, seed=5).mask.mean() < 0.03


def test_sixteen_bit_photos_stay_sixteen_bit():
    photo = small_photo("coffee", 96).astype(np.uint16) * 257
    damage = add_damage(photo, seed=0)
    assert damage.image.dtype == np.uint16 and damage.mask.any()


def test_infrared_is_flat_where_clean_and_dark_on_defects():
    damage = add_damage(small_photo("coffee", 160), seed=1)
    infrared = synthetic_infrared(damage)
    assert infrared[damage.coverage > 0.8].mean() < infrared[damage.coverage == 0].mean() - 80
    assert infrared[damage.coverage == 0].std() < 12


def test_mask_scores_tolerate_a_two_pixel_shift_but_not_more():
    true = np.zeros((40, 40), bool)
    true[20, 5:35] = True
    assert mask_scores(np.roll(true, 2, axis=0), true)["f1"] == 1.0
    assert mask_scores(np.roll(true, 4, axis=0), true)["f1"] == 0.0
    half = true.copy()
    half[20, 20:] = False
    scores = mask_scores(half, true)
    assert scores["precision"] == 1.0 and 0.5 < scores["recall"] < 0.7


# ------------------------------------------------------------------------------------------
# add_print_damage: realistic damage of old prints.

# Every kind on every photo, several of each even on the small photos of these tests
# (counts are per 0.25 MP).
ALL_ON = PrintDamageParams(
    cracks=(20, 20), crackle_chance=1.0, scratches=(20, 20), short_scratches=(100, 100),
    flakes=(30, 30), edge_chance=1.0, corner_chance=1.0, creases=(15, 15), specks=(200, 200),
    blotches=(15, 15), foxing_chance=1.0, hairs=(20, 20))
NO_JPEG = ALL_ON.model_copy(update={"jpeg_chance": 0.0})


def test_print_damage_is_the_same_for_a_seed_and_differs_for_another():
    photo = small_photo("chelsea", 128)
    first, again, other = (add_print_damage(photo, seed=s) for s in (3, 3, 4))
    for field in ("image", "mask", "kinds", "clean"):
        assert np.array_equal(getattr(first, field), getattr(again, field))
    assert not np.array_equal(first.image, other.image)


def test_print_damage_mask_marks_exactly_what_the_damage_moved():
    photo = small_photo("coffee", 160)
    for seed in (0, 1):
        damage = add_print_damage(photo, seed=seed, params=NO_JPEG)
        change = np.abs(damage.image.astype(int) - damage.clean.astype(int)).max(axis=2)
        assert damage.mask.any()
        # MIN_CHANGE is 8/255 before rounding; each side rounds by at most half a level.
        assert (change[damage.mask] >= 7).all()
        assert change[~damage.mask].max() <= 8
        assert damage.image.shape == photo.shape and damage.image.dtype == photo.dtype


@pytest.mark.parametrize("kind", list(PRINT_KINDS))
def test_each_print_kind_is_drawn_and_labelled_as_itself(kind):
    damage = add_print_damage(small_photo("rocket", 200), seed=2, params=ALL_ON, kinds=(kind,))
    assert damage.mask.any()
    assert set(np.unique(damage.kinds[damage.mask]).tolist()) == {PRINT_KINDS[kind]}
    assert not damage.kinds[~damage.mask].any()


def test_print_damage_is_mostly_lighter_than_the_print():
    # As on the real prints: paper shows where the emulsion cracks, flakes or is scratched.
    photo = small_photo("astronaut", 200)
    lighter = []
    for seed in range(4):
        damage = add_print_damage(photo, seed=seed)
        moved = damage.image.astype(int).sum(axis=2) - damage.clean.astype(int).sum(axis=2)
        lighter.append((moved[damage.mask] > 0).mean())
    assert np.mean(lighter) > 0.7


def test_a_grey_photo_stays_grey():
    photo = small_photo("camera", 128)
    damage = add_print_damage(photo, seed=1, params=ALL_ON)
    assert damage.image.shape == photo.shape and damage.clean.shape == photo.shape
    assert damage.mask.any()
    as_rgb = np.dstack([photo] * 3)
    grey = add_print_damage(as_rgb, seed=1,
                            params=NO_JPEG.model_copy(update={"tonings": (1.0, 0.0, 0.0)}))
    assert np.array_equal(grey.image[..., 0], grey.image[..., 1])
    assert np.array_equal(grey.image[..., 0], grey.image[..., 2])


def test_print_damage_leaves_the_photo_alone_and_keeps_sixteen_bits():
    photo = small_photo("coffee", 96)
    before = photo.copy()
    add_print_damage(photo, seed=0, params=ALL_ON)
    assert np.array_equal(photo, before)
    deep = add_print_damage(photo.astype(np.uint16) * 257, seed=0, params=ALL_ON)
    assert deep.image.dtype == np.uint16 and deep.mask.any()


def test_print_damage_params_refuse_reversed_ranges():
    with pytest.raises(ValueError, match="cracks must be"):
        PrintDamageParams(cracks=(4, 1))
    with pytest.raises(ValueError, match="tonings must be"):
        PrintDamageParams(tonings=(0.0, 0.0, 0.0))


def test_print_damage_refuses_unknown_kinds_and_odd_arrays():
    photo = small_photo("coffee", 64)
    with pytest.raises(ValueError, match="unknown damage kind 'mould'"):
        add_print_damage(photo, kinds=("mould",))
    with pytest.raises(ValueError, match="uint8/uint16"):
        add_print_damage(photo.astype(np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        add_print_damage(np.dstack([photo, photo[..., :1]]))
