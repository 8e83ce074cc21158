"""Pairing images with masks from listings, and refusing outputs among the inputs."""

from __future__ import annotations

import os

import pytest

from pipeline.discover import UsageError, check_output_location, item_id_for, pair
from tests.conftest import save, save_mask, small_photo


def test_pairs_nested_paths_with_any_mask_extension(archive):
    items = pair(str(archive["images"]), masks=str(archive["masks"]))
    by_path = {item.relative_path: item for item in items}
    assert sorted(by_path) == ["a/b/coffee.png", "a/chelsea.jpg", "rocket.png"]
    assert by_path["a/chelsea.jpg"].mask_uri.endswith("masks/a/chelsea.png")
    assert all(item.problem is None for item in items)


def test_image_without_mask_is_kept_with_a_problem(archive):
    os.remove(archive["masks"] / "rocket.png")
    items = {i.relative_path: i for i in pair(str(archive["images"]), str(archive["masks"]))}
    assert "no mask found for rocket.png" in items["rocket.png"].problem
    assert items["rocket.png"].mask_uri is None


def test_one_mask_for_every_image(archive, tmp_path):
    watermark = save_mask(small_photo()[:, :, 0] > 200, tmp_path / "watermark.png")
    items = pair(str(archive["images"]), mask=str(watermark))
    assert {item.mask_uri for item in items} == {str(watermark)}


def test_glob_selects_and_roots_relative_paths(archive):
    items = pair(str(archive["images"]) + "/a/**/*.png", masks=str(archive["masks"] / "a"))
    assert [item.relative_path for item in items] == ["b/coffee.png"]


def test_non_images_and_hidden_files_are_ignored(archive):
    (archive["images"] / "notes.txt").write_text("not a photo")
    save(small_photo(), archive["images"] / ".hidden.png")
    assert len(pair(str(archive["images"]), str(archive["masks"]))) == 3


def test_fingerprint_changes_when_a_mask_changes(archive):
    before = {i.item_id: i.input_fingerprint for i in pair(str(archive["images"]),
                                                           str(archive["masks"]))}
    mask_path = archive["masks"] / "rocket.png"
    stat = mask_path.stat()
    os.utime(mask_path, (stat.st_atime, stat.st_mtime + 10))
    after = {i.item_id: i.input_fingerprint for i in pair(str(archive["images"]),
                                                          str(archive["masks"]))}
    changed = [key for key in before if before[key] != after[key]]
    assert changed == [item_id_for("rocket.png")]


def test_missing_images_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        pair(str(tmp_path / "nowhere"), masks=str(tmp_path))


@pytest.mark.parametrize("out", ["images", "images/restored", "images/./sub"])
def test_out_equal_to_or_inside_images_is_refused(tmp_path, out):
    with pytest.raises(UsageError, match="inside IMAGES"):
        check_output_location(str(tmp_path / "images"), str(tmp_path / out))


def test_out_beside_images_is_fine(tmp_path):
    check_output_location(str(tmp_path / "images"), str(tmp_path / "images-restored"))


def test_gifs_are_listed_so_that_each_gets_a_row(archive):
    save(small_photo(), archive["images"] / "old/scan.gif")
    paths = [item.relative_path for item in pair(str(archive["images"]), str(archive["masks"]))]
    assert "old/scan.gif" in paths


def test_folders_are_listed_one_at_a_time_in_the_order_of_a_sorted_flat_listing(tmp_path):
    # A folder sorts as its name + "/": "a.png" < "a/..." < "a0.png", as in a sorted
    # recursive listing; each photo finds its mask in the mirroring folder.
    names = ["a.png", "a/x.png", "a/y/z.png", "a/zz.png", "a0.png", "b/c/d.png"]
    for name in names:
        save(small_photo(size=16), tmp_path / "images" / name)
        save_mask(small_photo(size=16)[:, :, 0] > 128,
                  (tmp_path / "masks" / name).with_suffix(".png"))
    items = pair(str(tmp_path / "images"), str(tmp_path / "masks"))
    assert [item.relative_path for item in items] == names
    assert [item.mask_uri for item in items] == [
        str((tmp_path / "masks" / name).with_suffix(".png")) for name in names]
