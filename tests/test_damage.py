"""Synthetic print damage: seeded, realistic in size and tone, with an honest true mask."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.damage import KINDS, DamageParams, add_damage, mask_scores, synthetic_infrared
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
