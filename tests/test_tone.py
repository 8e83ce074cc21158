"""A print's tone: gray stays gray, sepia stays on its tone curve, colour is filled in colour.

Through the real read -> fill -> write path (`restore_items`), in every supported format and
bit depth, and on the decision itself.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from pipeline import restore_items, tone
from pipeline.masks import synthetic_mask
from pipeline.methods import load_method
from pipeline.settings import RunSettings
from tests.conftest import save_mask, small_photo

SIZE = 128


def sepia_curve(luminance: np.ndarray) -> np.ndarray:
    """A warm toning: red lifted, blue held back (float in [0, 1], ... -> ... x 3)."""
    return np.stack([np.clip(luminance * 1.08 + 0.02, 0, 1), luminance,
                     np.clip(luminance * 0.82, 0, 1)], axis=-1)


def photo(kind: str, bits: int) -> np.ndarray:
    """gray-as-RGB, sepia or colour, at 8 or 16 bits (16: detail below the 8-bit step)."""
    scale = 65535 if bits == 16 else 255
    dtype = np.uint16 if bits == 16 else np.uint8
    if kind == "colour":
        pixels = small_photo("coffee", SIZE).astype(np.float64) / 255
    else:
        gray = small_photo("camera", SIZE).astype(np.float64) / 255
        if bits == 16:
            gray = np.clip(gray + np.linspace(0, 1 / 255, gray.shape[1])[None], 0, 1)
        pixels = np.repeat(gray[:, :, None], 3, 2) if kind == "gray" else sepia_curve(gray)
    return np.rint(pixels * scale).astype(dtype)


def encoded(pixels: np.ndarray, image_format: str) -> bytes:
    if pixels.dtype == np.uint16:
        if image_format == "tiff":
            buffer = io.BytesIO()
            tifffile.imwrite(buffer, pixels, photometric="rgb", compression="zlib")
            return buffer.getvalue()
        return cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))[1].tobytes()
    options = {"jpeg": {"quality": 90}, "webp": {"lossless": True}}.get(image_format, {})
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format.upper(), **options)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def levels(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float64) / (257 if pixels.dtype == np.uint16 else 1)


def chroma(pixels: np.ndarray) -> np.ndarray:
    """max - min over the channels, in levels of 255."""
    values = levels(pixels)
    return values.max(axis=-1) - values.min(axis=-1)


def off_curve(pixels: np.ndarray) -> np.ndarray:
    """Each pixel's distance (levels of 255, worst channel) from the nearest point of the
    sepia curve."""
    curve = sepia_curve(np.linspace(0, 1, 2048)) * 255
    # Each distinct colour once, a few hundred at a time: a print has far fewer colours than
    # pixels, and pixels x 2048 x 3 at once was half a gigabyte (seconds per call).
    values, back = np.unique(levels(pixels).reshape(-1, 3), axis=0, return_inverse=True)
    far = np.concatenate([np.abs(chunk[:, None] - curve[None]).max(axis=-1).min(axis=-1)
                          for chunk in np.array_split(values, len(values) // 256 + 1)])
    return far[back.ravel()]


CASES = [("png", 8), ("png", 16), ("jpeg", 8), ("tiff", 8), ("tiff", 16), ("webp", 8)]


def restored(tmp_path: Path, kind: str, image_format: str, bits: int, method: str = "tv"):
    """(input as decoded, the hole, the output as decoded, its manifest row)."""
    source = photo(kind, bits)
    name = f"{kind}.{'jpg' if image_format == 'jpeg' else image_format}"
    (tmp_path / "images").mkdir()
    data = encoded(source, image_format)
    (tmp_path / "images" / name).write_bytes(data)
    hole = synthetic_mask("strokes", *source.shape[:2], seed=3)
    save_mask(hole, tmp_path / "masks" / f"{kind}.png")
    settings = RunSettings(images=str(tmp_path / "images"), masks=str(tmp_path / "masks"),
                           out=str(tmp_path / "out"), method=method)
    [row] = restore_items(settings)
    assert row["status"] == "ok", row["error"]
    output = (tmp_path / "out" / name).read_bytes()
    return decoded(data), hole, decoded(output), row


@pytest.mark.parametrize(("image_format", "bits"), CASES)
def test_a_gray_print_stored_as_rgb_gets_fills_without_chroma(tmp_path, image_format, bits):
    before, hole, after, row = restored(tmp_path, "gray", image_format, bits)
    assert row["tone"] == "gray"
    assert json.loads(row["params"])["method_params"]["tone"] == "auto"
    assert chroma(after[hole]).max() == 0
    assert (after[hole] != before[hole]).any(), "nothing was filled"


@pytest.mark.parametrize(("image_format", "bits"), CASES)
def test_a_sepia_print_gets_fills_on_its_own_tone_curve(tmp_path, image_format, bits):
    before, hole, after, row = restored(tmp_path, "sepia", image_format, bits)
    assert row["tone"] == "toned"
    # Lossy storage moves the print's own pixels off the curve (chroma subsampling): the
    # fill may be as far off as the known pixels are, and no farther.
    allowed = max(4.0, np.percentile(off_curve(before[~hole]), 99))
    assert np.percentile(off_curve(after[hole]), 99) <= allowed
    assert chroma(after[hole]).mean() > 10, "a toned print lost its tone in the fill"


@pytest.mark.parametrize(("image_format", "bits"), CASES)
def test_a_colour_photo_is_filled_in_colour(tmp_path, image_format, bits):
    _, hole, after, row = restored(tmp_path, "colour", image_format, bits)
    assert row["tone"] == "colour"
    assert np.percentile(chroma(after[hole]), 90) > 20


@pytest.mark.parametrize("kind", ["gray", "sepia"])
def test_the_default_method_keeps_the_tone(tmp_path, kind):
    _, hole, after, row = restored(tmp_path, kind, "png", 8, method="hallucinate")
    if kind == "gray":
        assert chroma(after[hole]).max() == 0
    else:
        assert np.percentile(off_curve(after[hole]), 99) <= 4


def test_per_channel_fills_leave_the_tone_which_is_why_auto_is_the_default():
    """The optimiser's network terms differ per channel: per channel, gray gets colour."""
    source = photo("gray", 8)
    hole = synthetic_mask("strokes", *source.shape[:2], seed=3)
    per_channel = load_method("hallucinate", {"tone": "colour"})(source, hole)
    by_tone = load_method("hallucinate", {})(source, hole)
    assert per_channel.tone == "colour" and by_tone.tone == "gray"
    assert chroma(per_channel.pixels[hole]).max() > 5
    assert chroma(by_tone.pixels[hole]).max() == 0


@pytest.mark.parametrize(("kind", "expected"),
                         [("gray", "gray"), ("sepia", "toned"), ("colour", "colour")])
@pytest.mark.parametrize("storage", ["png", "jpeg"])
def test_the_tone_is_decided_from_known_pixels_only(kind, expected, storage):
    pixels = decoded(encoded(photo(kind, 8), storage))
    hole = synthetic_mask("blob", *pixels.shape[:2], seed=1)
    damaged = pixels.copy()
    damaged[hole] = (255, 0, 255)  # a magenta stain in the hole must not make it colour
    assert tone.decide(damaged, hole).kind == expected


def test_one_channel_photos_are_gray_and_alpha_is_not_a_colour():
    gray = small_photo("camera", 64)
    assert tone.decide(gray, np.zeros(gray.shape, bool)).kind == "gray"
    rgba = np.dstack([np.repeat(gray[:, :, None], 3, 2), np.full(gray.shape, 128, np.uint8)])
    hole = synthetic_mask("strokes", *gray.shape, seed=2)
    result = load_method("tv", {})(rgba, hole)
    assert result.tone == "gray"
    assert chroma(result.pixels[:, :, :3][hole]).max() == 0
    assert (result.pixels[:, :, 3] == 128).all()
