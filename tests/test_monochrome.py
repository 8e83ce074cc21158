"""What `--detector auto` runs: `verified` on a scan of a gray or toned print, `learned` on a
colour photo, `infrared` when the scan has an IR channel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.damage import add_print_damage, synthetic_infrared
from pipeline.detect import detect, weights_id
from pipeline.detectors import monochrome
from pipeline.detectors.monochrome import looks_like_print
from tests.conftest import small_photo


def sepia(gray: np.ndarray) -> np.ndarray:
    """A gray photo toned brown as a sepia print is: each channel a tint of the luminance."""
    level = gray.astype(np.float32)[:, :, None] / 255
    tint = np.array([1.0, 0.82, 0.62], np.float32)
    return np.clip(255 * (level * tint + 0.04 * (1 - level)), 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: int = 80) -> np.ndarray:
    """The photo through a JPEG with 4:2:0 chroma, which puts colour beside sharp edges."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def test_gray_photos_look_like_prints_however_stored():
    gray = small_photo("camera", 128)
    assert looks_like_print(gray)
    assert looks_like_print(np.dstack([gray] * 3))
    assert looks_like_print(np.dstack([gray] * 3 + [np.full_like(gray, 255)]))  # alpha
    assert looks_like_print(np.dstack([gray.astype(np.uint16) * 257] * 3))


def test_a_gray_print_scanned_in_colour_with_noise_looks_like_a_print():
    # Scanner noise puts a little colour on every pixel, in no one direction.
    gray = small_photo("camera", 256).astype(np.int16)
    noise = np.random.default_rng(0).integers(-6, 7, (*gray.shape, 3))
    noisy = np.clip(gray[:, :, None] + noise, 0, 255).astype(np.uint8)
    assert monochrome.hue_facts(noisy)[2] < monochrome.MIN_CONCENTRATION
    assert looks_like_print(noisy)
    assert looks_like_print(jpeg(noisy))


@pytest.mark.parametrize("stored", ["png", "jpeg"])
def test_a_toned_print_looks_like_a_print_also_after_jpeg(stored):
    toned = sepia(small_photo("camera", 256))
    assert looks_like_print(toned if stored == "png" else jpeg(toned))
    assert looks_like_print(add_print_damage(small_photo("coffee", 256)[:, :, :3], seed=1).image)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "retina", "rocket",
                                  "hubble_deep_field", "immunohistochemistry"])
def test_colour_photos_do_not_even_when_warm_all_over(name):
    # Chelsea (a ginger cat), coffee and the retina keep their colours on nearly one hue;
    # they lie much further from gray than a toned print does.
    assert not looks_like_print(small_photo(name, 256)[:, :, :3])


def test_auto_runs_verified_on_a_print_learned_on_a_colour_photo_infrared_with_ir():
    toned = sepia(small_photo("camera", 128))
    colour = small_photo("coffee", 128)
    assert detect(toned).detector == "verified"
    assert np.array_equal(detect(toned).mask, detect(toned, "verified").mask)
    assert detect(colour).detector == "learned"
    infrared = synthetic_infrared(add_print_damage(toned, seed=0), 0)
    assert detect(toned, infrared=infrared).detector == "infrared"
    assert detect(toned, scale=0.5).detector == "verified"
    assert detect(toned, margin=8).detector == "verified"


def test_auto_has_its_own_weights_id_that_moves_with_the_rule(monkeypatch):
    # Resume compares detector_weights: a photo found by the rule as it was must be redone
    # when the rule, or either detector's weights, change.
    before = weights_id("auto")
    assert before not in (weights_id("learned"), weights_id("verified"))
    monkeypatch.setattr(monochrome, "MAX_CHROMA", monochrome.MAX_CHROMA + 1)
    assert weights_id("auto") != before
