"""One item end to end in-process: every bad input becomes its own manifest row."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.discover import pair
from pipeline.settings import RunSettings, params_json
from pipeline.worker import Context, restore_batch, restore_item, write_folders
from tests.conftest import save, save_mask, small_photo


def restore_all(archive, **overrides) -> dict[str, dict]:
    settings = RunSettings(images=str(archive["images"]), masks=str(archive["masks"]),
                           out=str(archive["out"]), method="telea", **overrides)
    context = Context(settings, params_json({"test": True}))
    items = pair(settings.images, settings.masks)
    return {item.relative_path: restore_item(item, context) for item in items}


def test_restores_and_keeps_known_pixels_bit_identical(archive):
    rows = restore_all(archive)
    assert {r["status"] for r in rows.values()} == {"ok"}
    row = rows["a/b/coffee.png"]
    before = np.asarray(Image.open(archive["images"] / "a/b/coffee.png"))
    after = np.asarray(Image.open(archive["out"] / "a/b/coffee.png"))
    mask = np.asarray(Image.open(archive["masks"] / "a/b/coffee.png")) > 127
    assert (after[~mask] == before[~mask]).all()
    assert (after[mask] != before[mask]).any()
    assert row["output_uri"].endswith("out/a/b/coffee.png")
    assert row["hole_fraction"] == pytest.approx(mask.mean())
    assert row["width"] == before.shape[1] and row["height"] == before.shape[0]
    assert len(row["input_sha256"]) == 64 and row["error"] is None


@pytest.mark.parametrize("fields", [{}, {"output_format": "jpeg"},
                                    {"masks": "auto", "detector": "tophat"},
                                    {"task": "detect", "masks": None, "detector": "tophat"}],
                         ids=["outputs", "another-format", "detected-masks", "detect"])
def test_write_folders_are_where_a_batch_writes(archive, fields):
    """Where the driver looks for a killed process's temporaries (pipeline.restarts)."""
    settings = RunSettings(**{"images": str(archive["images"]), "masks": str(archive["masks"]),
                              "out": str(archive["out"]), "method": "telea"} | fields)
    items = pair(settings.images, settings.masks)
    rows = restore_batch(items, Context(settings, params_json({"test": True})))
    assert {row["status"] for row in rows} == {"ok"}
    written = {str(path.parent) for path in archive["out"].rglob("*") if path.is_file()}
    assert write_folders(settings, items) == written


def test_corrupt_image_is_a_failed_row(archive):
    (archive["images"] / "rocket.png").write_bytes(b"\x89PNG but not really")
    rows = restore_all(archive)
    assert rows["rocket.png"]["status"] == "failed"
    assert rows["rocket.png"]["error_kind"] == "decode"
    assert "not a readable image" in rows["rocket.png"]["error"]
    assert rows["a/chelsea.jpg"]["status"] == "ok"


def test_unreadable_mask_is_a_failed_row(archive):
    (archive["masks"] / "rocket.png").write_bytes(b"")
    row = restore_all(archive)["rocket.png"]
    assert (row["status"], row["error_kind"]) == ("failed", "mask")
    assert "empty file" in row["error"]


def test_mask_of_another_size_fails_unless_resized(archive):
    save_mask(np.ones((10, 10), bool) & (np.arange(10) < 3), archive["masks"] / "rocket.png")
    assert "--resize-masks" in restore_all(archive)["rocket.png"]["error"]
    assert restore_all(archive, resize_masks=True)["rocket.png"]["status"] == "ok"


def test_empty_mask_copies_the_input_and_is_skipped(archive):
    photo = np.asarray(Image.open(archive["images"] / "rocket.png"))
    save_mask(np.zeros(photo.shape[:2], bool), archive["masks"] / "rocket.png")
    row = restore_all(archive)["rocket.png"]
    assert row["status"] == "skipped" and "nothing to fill" in row["error"]
    assert (archive["out"] / "rocket.png").read_bytes() == (
        archive["images"] / "rocket.png").read_bytes()


def test_all_hole_mask_fails_with_a_clear_reason(archive):
    photo = np.asarray(Image.open(archive["images"] / "rocket.png"))
    save_mask(np.ones(photo.shape[:2], bool), archive["masks"] / "rocket.png")
    row = restore_all(archive)["rocket.png"]
    assert (row["status"], row["error_kind"]) == ("failed", "all_hole")
    assert "whole image" in row["error"]
    assert not (archive["out"] / "rocket.png").exists()


def test_missing_mask_is_a_failed_row(archive):
    (archive["masks"] / "rocket.png").unlink()
    row = restore_all(archive)["rocket.png"]
    assert row["status"] == "failed" and "no mask found" in row["error"]


def test_inputs_are_never_modified(archive):
    before = {p: p.read_bytes() for p in archive["root"].rglob("*") if p.is_file()}
    restore_all(archive)
    assert all(path.read_bytes() == data for path, data in before.items())


@pytest.mark.parametrize("output_format", ["png", "tiff", "webp"])
def test_format_override_changes_the_extension(archive, output_format):
    rows = restore_all(archive, output_format=output_format)
    uri = rows["a/chelsea.jpg"]["output_uri"]
    assert uri.rsplit(".", 1)[1] in {"png": "png", "tiff": "tif", "webp": "webp"}[output_format]
    assert Image.open(uri).format == {"png": "PNG", "tiff": "TIFF", "webp": "WEBP"}[
        output_format]


def test_params_are_recorded(archive):
    row = restore_all(archive)["rocket.png"]
    assert json.loads(row["params"]) == {"test": True}
    assert row["method"] == "telea" and row["device"] == "cpu"


def test_gray_16_bit_photo(archive):
    deep = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    save(deep, archive["images"] / "deep.png")
    hole = np.zeros((64, 64), bool)
    hole[20:30, 20:40] = True
    save_mask(hole, archive["masks"] / "deep.png")
    assert restore_all(archive)["deep.png"]["status"] == "ok"
    after = np.asarray(Image.open(archive["out"] / "deep.png"))
    assert after.dtype == np.uint16 and (after[~hole] == deep[~hole]).all()


def test_a_batch_fills_together_and_each_bad_item_is_its_own_row(archive):
    """What a Ray actor does with a batch: the fill is shared, the failures are not."""
    (archive["images"] / "rocket.png").write_bytes(b"not an image")
    size = Image.open(archive["images"] / "a/b/coffee.png").size
    save_mask(np.ones(size[::-1], bool), archive["masks"] / "a/b/coffee.png")  # all hole
    settings = RunSettings(images=str(archive["images"]), masks=str(archive["masks"]),
                           out=str(archive["out"]), method="tv",
                           method_params={"steps": 2, "batch_pixels": 10**6})
    context = Context(settings, params_json({"test": True}))
    rows = {row["relative_path"]: row
            for row in restore_batch(pair(settings.images, settings.masks), context)}
    assert (rows["rocket.png"]["status"], rows["rocket.png"]["error_kind"]) == ("failed",
                                                                                "decode")
    assert rows["a/b/coffee.png"]["error_kind"] == "all_hole"
    assert rows["a/chelsea.jpg"]["status"] == "ok"
    assert all(row["seconds"] > 0 and row["finished_at"] for row in rows.values())


def test_a_batch_holds_only_a_bounded_number_of_decoded_pixels(archive, monkeypatch):
    import pipeline.worker as worker

    settings = RunSettings(images=str(archive["images"]), masks=str(archive["masks"]),
                           out=str(archive["out"]), method="telea")
    context = Context(settings, params_json({"test": True}))
    groups = []
    fill_together = context.method.call_many
    monkeypatch.setattr(context.method, "call_many",
                        lambda pairs: groups.append(len(pairs)) or fill_together(pairs))
    items = pair(settings.images, settings.masks)
    assert {row["status"] for row in restore_batch(items, context)} == {"ok"}
    assert groups == [3]
    groups.clear()
    monkeypatch.setattr(worker, "GROUP_PIXELS", 1)  # every photo is a big scan
    assert {row["status"] for row in restore_batch(items, context)} == {"ok"}
    assert groups == [1, 1, 1]


@pytest.mark.parametrize("failure", ["fill", "write"])
def test_a_photo_whose_fill_or_write_fails_frees_its_pixels_at_once(archive, monkeypatch,
                                                                     failure):
    """Each photo is its own group here; when the next one is filled, every earlier photo's
    pixels must be gone, with the garbage collector off (reference counts alone)."""
    import gc
    import weakref

    import pipeline.worker as worker

    first = archive["images"] / "a/b/coffee.png"  # the first item in path order
    size = Image.open(first).size
    if failure == "fill":  # an all-hole mask: the method fails this photo
        save_mask(np.ones(size[::-1], bool), archive["masks"] / "a/b/coffee.png")
    else:  # RGBA to JPEG is refused by the encoder: the write fails
        rgba = np.dstack([np.asarray(Image.open(first).convert("RGB")),
                          np.full(size[::-1], 200, np.uint8)])
        save(rgba, first)
    settings = RunSettings(images=str(archive["images"]), masks=str(archive["masks"]),
                           out=str(archive["out"]), method="telea",
                           output_format="jpeg" if failure == "write" else None)
    context = Context(settings, params_json({"test": True}))
    seen, alive_at_later_fills = [], []
    fill_together = context.method.call_many

    def recording(pairs):
        alive_at_later_fills.append([ref() is not None for ref in seen])
        seen.extend(weakref.ref(image) for image, _ in pairs)
        return fill_together(pairs)

    monkeypatch.setattr(context.method, "call_many", recording)
    monkeypatch.setattr(worker, "GROUP_PIXELS", 1)  # one photo per group
    gc.disable()
    try:
        rows = restore_batch(pair(settings.images, settings.masks), context)
    finally:
        gc.enable()
    assert rows[0]["status"] == "failed", rows[0]
    assert rows[0]["error_kind"] == ("all_hole" if failure == "fill" else "decode")
    assert [row["status"] for row in rows[1:]] == ["ok", "ok"]
    assert alive_at_later_fills == [[], [False], [False, False]]


def test_a_gif_fails_with_a_reason_unless_format_is_given_then_its_first_frame_is_restored(
        archive):
    photo = small_photo("rocket")
    frames = [Image.fromarray(photo).quantize(64), Image.fromarray(255 - photo).quantize(64)]
    gif = archive["images"] / "animated.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    hole = np.zeros(photo.shape[:2], bool)
    hole[20:40, 30:50] = True
    save_mask(hole, archive["masks"] / "animated.png")
    row = restore_all(archive)["animated.gif"]  # listed, never dropped
    assert (row["status"], row["error_kind"]) == ("failed", "decode")
    assert "GIF cannot be written back faithfully; pass --format png" in row["error"]
    assert not list(archive["out"].glob("animated.*"))
    row = restore_all(archive, output_format="png")["animated.gif"]
    assert row["status"] == "ok" and row["output_uri"].endswith("animated.png")
    restored = Image.open(archive["out"] / "animated.png")
    assert restored.format == "PNG" and getattr(restored, "n_frames", 1) == 1
    first = np.asarray(Image.open(gif).convert("RGB"))  # a GIF opens on its first frame
    after = np.asarray(restored.convert("RGB"))
    assert np.array_equal(after[~hole], first[~hole])
    assert (after[hole] != first[hole]).any()  # filled, not copied


def test_batches_restored_at_once_on_one_actor_give_one_row_and_one_whole_file_each(
        tmp_path):
    """What a threaded actor does (pipeline/stages.py): two batches at once on one context,
    reads ahead and writes behind, every file whole and every item one row."""
    import hashlib
    import threading

    from pipeline.stages import BATCHES_AT_ONCE

    for index in range(12):
        photo = small_photo(["chelsea", "coffee", "rocket"][index % 3], 48)
        save(photo, tmp_path / "images" / f"p{index:02d}.png")
        save_mask(np.eye(*photo.shape[:2], dtype=bool), tmp_path / "masks" / f"p{index:02d}.png")
    (tmp_path / "images" / "p05.png").write_bytes(b"not a photo")
    settings = RunSettings(images=str(tmp_path / "images"), masks=str(tmp_path / "masks"),
                           out=str(tmp_path / "out"), method="telea")
    context = Context(settings, params_json({"test": True}))
    items = pair(settings.images, settings.masks)
    batches = [items[start::BATCHES_AT_ONCE] for start in range(BATCHES_AT_ONCE)]
    rows = []
    threads = [threading.Thread(target=lambda b=batch: rows.extend(restore_batch(b, context)))
               for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(row["relative_path"] for row in rows) == [f"p{i:02d}.png" for i in range(12)]
    statuses = {row["relative_path"]: row["status"] for row in rows}
    assert statuses.pop("p05.png") == "failed" and set(statuses.values()) == {"ok"}
    for row in rows:
        if row["status"] == "ok":
            data = (tmp_path / "out" / row["relative_path"]).read_bytes()
            assert row["output_bytes"] == len(data)
            assert Image.open(tmp_path / "out" / row["relative_path"]).size == (row["width"],
                                                                                 row["height"])
            source = (tmp_path / "images" / row["relative_path"]).read_bytes()
            mask = (tmp_path / "masks" / row["relative_path"]).read_bytes()
            assert row["input_sha256"] == hashlib.sha256(source + mask).hexdigest()
    assert not list((tmp_path / "out").glob(".tmp-*"))
    assert context.stages.budget.held == 0, "a finished item kept its pixels in the budget"


def test_the_one_mask_for_every_photo_is_read_once_per_actor(archive, monkeypatch):
    import pipeline.storage as storage

    one_mask = archive["root"] / "watermark.png"
    save_mask(np.eye(40, dtype=bool), one_mask)  # resized to each photo's size
    reads = []
    read_uri = storage.read_uri
    monkeypatch.setattr(storage, "read_uri",
                        lambda uri, options=None: reads.append(uri) or read_uri(uri, options))
    settings = RunSettings(images=str(archive["images"]), mask=str(one_mask),
                           out=str(archive["out"]), method="telea")
    context = Context(settings, params_json({"test": True}))
    items = pair(settings.images, None, settings.mask)
    rows = restore_batch(items, context) + restore_batch(items, context)
    assert [row["status"] for row in rows] == ["ok"] * 6
    assert reads.count(str(one_mask)) == 1
