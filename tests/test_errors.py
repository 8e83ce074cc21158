"""The `error` of a failed row, for each `error_kind`: the file it concerns and the reason in
words, never a Python object's repr. Every case is a real broken input run through the
worker (`restore_item`), as a Ray actor runs it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import runner
from pipeline.masks import synthetic_mask
from pipeline.settings import RunSettings
from pipeline.worker import Context, restore_item
from tests.conftest import save, save_mask, small_photo


class BrokenMethod:
    """A method with a bug in it: `internal` is the kind of errors in our own code."""

    def call_many(self, pairs):
        raise KeyError("radius")


def photo_and_mask(root: Path, hole: str = "strokes") -> tuple[Path, Path]:
    photo = small_photo()
    image = save(photo, root / "images" / "photo.png")
    if hole == "all":
        mask = np.ones(photo.shape[:2], bool)
    else:
        mask = synthetic_mask(hole, *photo.shape[:2], seed=1)
    return image, save_mask(mask, root / "masks" / "photo.png")


def decode(root):
    image, mask = photo_and_mask(root)
    image.write_bytes(b"these are words, not a photo")
    return {}, image, None


def mask(root):
    image, mask = photo_and_mask(root)
    mask.write_bytes(b"these are words, not a mask")
    return {}, mask, None


def mask_missing(root):
    image, mask = photo_and_mask(root)
    mask.unlink()  # the pairing finds no mask: the row says so
    return {}, image.name, None


def all_hole(root):
    image, mask = photo_and_mask(root, "all")
    return {}, mask, None


def missing(root):
    image, mask = photo_and_mask(root)
    return {}, image, image.unlink  # gone between listing and reading


def storage(root):
    image, mask = photo_and_mask(root)

    def replace_with_a_folder():
        image.unlink()
        image.mkdir()
    return {}, image, replace_with_a_folder


def detect(root):
    image, mask = photo_and_mask(root)
    shutil.rmtree(root / "masks")
    return {"masks": "auto", "detector": "infrared"}, image, None  # an RGB photo has no IR


def internal(root):
    image, mask = photo_and_mask(root)
    return {}, image, None


CASES = {"decode": decode, "mask": mask, "mask (no mask found)": mask_missing,
         "all_hole": all_hole, "missing": missing, "storage": storage, "detect": detect,
         "internal": internal}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_error_kind_names_the_file_and_the_reason_in_words(tmp_path, case):
    overrides, concerned, after_planning = CASES[case](tmp_path)
    settings = RunSettings(images=str(tmp_path / "images"), masks=str(tmp_path / "masks"),
                           out=str(tmp_path / "out"), method="telea").model_copy(
        update=overrides)
    work = runner.plan(settings, in_process=True)
    if after_planning:
        after_planning()
    context = Context(settings, work.params)
    if case == "internal":
        context.method = BrokenMethod()
    [item] = work.todo
    row = restore_item(item, context)
    kind = case.split(" ")[0]
    assert (row["status"], row["error_kind"]) == ("failed", kind), row["error"]
    assert str(concerned) in row["error"]
    assert " object at 0x" not in row["error"] and "<" not in row["error"], row["error"]
    assert "\n" not in row["error"]


def test_a_file_pillow_cannot_identify_says_so_without_its_bytesio():
    from pipeline import imageio

    with pytest.raises(imageio.ImageDecodeError) as raised:
        imageio.decode(b"these are words, not a photo", max_pixels=1_000_000)
    assert str(raised.value) == "not a readable image (no image format Pillow knows)"
