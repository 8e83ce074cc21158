"""Detection in the pipeline: `inpaint detect`, and `inpaint run --masks auto` with
detected masks written beside the outputs; a hand-made mask always wins."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.dataset as pads
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.damage import add_damage, mask_scores, synthetic_infrared
from pipeline.detect import weights_id
from pipeline.runner import restore_items
from pipeline.settings import RunSettings
from tests.conftest import save, save_mask, small_photo


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255**2 / error)


@pytest.fixture
def scans(tmp_path):
    """A damaged print, an undamaged one with fine detail, and an RGBI scan."""
    images = tmp_path / "scans"
    damage = add_damage(small_photo("chelsea", 384), seed=7)
    save(damage.image, images / "box1" / "cat.png")
    # A retina's vessels: thin dark curves, fine detail with no damage that looks like hairs.
    save(small_photo("retina", 384), images / "clean.png")
    film = add_damage(small_photo("rocket", 200), seed=8)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.dstack([film.image, synthetic_infrared(film, seed=8)]),
                     photometric="rgb", extrasamples=["unspecified"])
    (images / "film.tif").write_bytes(buffer.getvalue())
    # Scanners write 16 bits per sample too (64-bit RGBI).
    deep = np.dstack([film.image, synthetic_infrared(film, seed=8)]).astype(np.uint16) * 257
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, deep, photometric="rgb", extrasamples=["unspecified"])
    (images / "deep" / "film16.tif").parent.mkdir()
    (images / "deep" / "film16.tif").write_bytes(buffer.getvalue())
    return {"images": images, "out": tmp_path / "out", "damage": damage, "film": film,
            "root": tmp_path}


def settings(scans, **fields) -> RunSettings:
    return RunSettings(images=str(scans["images"]), out=str(scans["out"]), method="telea",
                       report=False, **fields)


def by_path(rows):
    return {row["relative_path"]: row for row in rows}


def read_mask(uri) -> np.ndarray:
    return np.asarray(Image.open(uri).convert("L")) > 127


def test_masks_auto_records_the_detected_mask_beside_the_outputs(scans):
    rows = by_path(restore_items(settings(scans, masks="auto")))
    assert {row["status"] for row in rows.values()} <= {"ok", "skipped"}
    damaged = rows["box1/cat.png"]
    assert damaged["mask_uri"] == str(scans["out"] / "_masks" / "box1" / "cat.png")
    found = read_mask(damaged["mask_uri"])
    assert mask_scores(found, scans["damage"].mask)["recall"] > 0.4
    assert json.loads(damaged["defects"])["dust"] >= 1
    assert damaged["damage_fraction"] == pytest.approx(found.mean())
    params = json.loads(damaged["params"])
    assert params["mask_source"] == "auto" and params["detector"] == "auto"
    assert params["sensitivity"] == 0.5 and params["detect_scale"] == 1.0
    assert params["detector_weights"] == weights_id("auto")  # a retrained net redoes the photo
    assert damaged["detector"] == "learned"  # a colour photo: auto picked the learned net
    restored = np.asarray(Image.open(damaged["output_uri"]))
    clean = small_photo("chelsea", 384)
    assert psnr(restored, clean) > psnr(scans["damage"].image, clean) + 1


def test_an_undamaged_photo_through_masks_auto_comes_back_nearly_untouched(scans):
    row = by_path(restore_items(settings(scans, masks="auto")))["clean.png"]
    restored = np.asarray(Image.open(row["output_uri"]))
    assert psnr(restored, small_photo("retina", 384)) > 45
    assert row["damage_fraction"] <= 0.005


def test_a_hand_made_mask_wins_over_detection(scans):
    hand = np.zeros((255, 384), bool)
    hand[40:60, 50:90] = True
    save_mask(hand, scans["root"] / "hand" / "box1" / "cat.png")
    rows = by_path(restore_items(settings(scans, masks="auto",
                                          hand_masks=str(scans["root"] / "hand"))))
    hand_uri = str(scans["root"] / "hand" / "box1" / "cat.png")
    assert rows["box1/cat.png"]["mask_uri"] == hand_uri
    assert rows["box1/cat.png"]["hole_fraction"] == pytest.approx(hand.mean())
    assert rows["box1/cat.png"]["defects"] is None
    assert rows["clean.png"]["mask_uri"].startswith(str(scans["out"] / "_masks"))
    assert not (scans["out"] / "_masks" / "box1" / "cat.png").exists()


def test_the_infrared_channel_is_used_when_the_scan_has_one(scans):
    rows = by_path(restore_items(settings(scans, task="detect")))
    for relative, mask_name in (("film.tif", "film.png"), ("deep/film16.tif", "deep/film16.png")):
        film = rows[relative]
        assert film["status"] == "ok" and film["method"] == "infrared", film["error"]
        assert film["output_uri"] == str(scans["out"] / mask_name)
        assert mask_scores(read_mask(film["output_uri"]), scans["film"].mask)["f1"] > 0.8
    assert rows["clean.png"]["method"] == "learned"


@pytest.mark.slow
def test_detect_command_writes_masks_and_a_manifest_on_ray(scans, local_ray):
    (scans["images"] / "broken.jpg").write_bytes(b"not a photo")
    masks = scans["root"] / "masks"
    cli = CliRunner()
    result = cli.invoke(app, ["detect", str(scans["images"]), "--out", str(masks)])
    assert result.exit_code == 1, result.output  # the broken file is a failed row
    rows = by_path(pads.dataset(str(masks / "_manifest")).to_table().to_pylist())
    assert rows["broken.jpg"]["status"] == "failed"
    assert rows["broken.jpg"]["error_kind"] == "decode"
    for relative in ("box1/cat.png", "clean.png", "film.tif", "deep/film16.tif"):
        row = rows[relative]
        assert row["status"] == "ok" and row["seconds"] > 0
        assert set(json.loads(row["defects"])) == {"dust", "hair", "scratch"}
        mask = read_mask(row["output_uri"])
        assert row["damage_fraction"] == pytest.approx(mask.mean())
    assert (masks / "box1" / "cat.png").is_file()
    again = cli.invoke(app, ["detect", str(scans["images"]), "--out", str(masks)])
    assert "4 already done" in again.output


def test_infrared_asked_of_a_scan_without_ir_is_a_failed_row_not_a_crash(scans):
    rows = by_path(restore_items(settings(scans, task="detect", detector="infrared")))
    assert rows["film.tif"]["status"] == "ok"
    assert rows["clean.png"]["status"] == "failed"
    assert rows["clean.png"]["error_kind"] == "detect"
    assert "IR channel" in rows["clean.png"]["error"]
