"""What `--detector auto` runs: `verified` on a scan of a gray or toned print, `learned` on a
colour photo, `infrared` when the scan has an IR channel."""

from __future__ import annotations

import io

import cv2
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


# What `auto` does to picture on gray and toned prints, where it runs `verified`: the picture
# cases of tests/test_verified.py made gray and sepia. Measured share of the region flagged
# in brackets; the ones over 0.2% are what `verified` still takes for damage (README).
AUTO_ON_PRINTS_FLAGS = {("frame line and mount edges", "sepia"),  # (1.3%)
                        ("lattice towers and their lamps", "gray"),  # (0.6%)
                        ("lattice towers and their lamps", "sepia"),  # (0.9%)
                        ("specular highlights of a cup and spoon", "gray"),  # (2.6%)
                        ("a caption's lettering", "gray"),  # (1.9%)
                        ("a print's edge and a wide light lid", "gray"),  # (45%)
                        ("a print's edge and a wide light lid", "sepia")}  # (40%)


def picture_cases(known: set[tuple[str, str]], detector: str):
    """The picture cases, gray and sepia, as (photo, region, tone) params; those in `known`
    strict xfails, since `detector` flags them."""
    from tests.test_verified import PICTURE, PICTURE_STILL_FLAGGED

    for kind, (photo, region) in {**PICTURE, **PICTURE_STILL_FLAGGED}.items():
        for tone in ("gray", "sepia"):
            marks = ([pytest.mark.xfail(strict=True, reason=f"known: {detector} flags it")]
                     if (kind, tone) in known else [])
            yield pytest.param(photo, region, tone, id=f"{kind}, {tone}", marks=marks)


def as_print(photo, tone: str) -> np.ndarray:
    """A picture case's photo as a gray or a sepia print."""
    gray = cv2.cvtColor(np.ascontiguousarray(photo()[:, :, :3]), cv2.COLOR_RGB2GRAY)
    return gray if tone == "gray" else sepia(gray)


@pytest.mark.slow
@pytest.mark.parametrize(("photo", "region", "tone"),
                         list(picture_cases(AUTO_ON_PRINTS_FLAGS, "verified")))
def test_auto_leaves_a_prints_own_fine_lines_alone(photo, region, tone):
    found = detect(as_print(photo, tone))
    assert found.detector == "verified"
    assert found.mask[region].mean() <= 0.002, found.mask[region].mean()
