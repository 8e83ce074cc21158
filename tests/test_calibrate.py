"""`inpaint calibrate`: each sensitivity scored against hand masks, the best level picked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline import calibrate
from pipeline.cli import app
from pipeline.damage import add_print_damage, mask_scores
from pipeline.detect import detect
from pipeline.discover import UsageError
from tests.conftest import small_photo

PRINTS = (("chelsea", 1), ("coffee", 2))


@pytest.fixture
def masked_prints(tmp_path: Path) -> dict[str, Path]:
    """Two damaged prints with their true masks as hand masks, a third print nobody masked,
    and a broken file whose mask exists."""
    images, masks = tmp_path / "scans", tmp_path / "checked"
    (images / "box").mkdir(parents=True)
    (masks / "box").mkdir(parents=True)
    truth = {}
    for name, seed in PRINTS:
        damage = add_print_damage(small_photo(name, 192), seed=seed)
        Image.fromarray(damage.image).save(images / "box" / f"{name}.png")
        Image.fromarray(damage.mask.astype(np.uint8) * 255).save(masks / "box" / f"{name}.tif")
        truth[name] = (damage.image, damage.mask)
    unmasked = add_print_damage(small_photo("astronaut", 192), seed=3).image
    Image.fromarray(unmasked).save(images / "astronaut.png")
    (images / "broken.png").write_bytes(b"not a photo")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / "broken.png")
    return {"images": images, "masks": masks, "truth": truth}


@pytest.mark.slow
def test_every_level_is_scored_on_the_masked_photos_pooled(masked_prints):
    result = calibrate.calibrate(str(masked_prints["images"]), str(masked_prints["masks"]),
                                 "verified", (0.9, 0.5))
    assert sorted(result.photos) == ["box/chelsea.png", "box/coffee.png"]  # astronaut unmasked
    assert [relative for relative, _ in result.skipped] == ["broken.png"]
    assert "not a readable image" in result.skipped[0][1]
    assert [score.sensitivity for score in result.levels] == [0.5, 0.9]
    assert result.ran == ["verified"]
    # The pooled figures, recomputed here from the detector's masks photo by photo.
    for score in result.levels:
        found = {name: detect(image, "verified", score.sensitivity).mask
                 for name, (image, _) in masked_prints["truth"].items()}
        flagged = sum(int(mask.sum()) for mask in found.values())
        marked = sum(int(true.sum()) for _, true in masked_prints["truth"].values())
        right = sum(mask_scores(found[name], true)["precision"] * found[name].sum()
                    for name, (_, true) in masked_prints["truth"].items())
        hit = sum(mask_scores(found[name], true)["recall"] * true.sum()
                  for name, (_, true) in masked_prints["truth"].items())
        assert score.precision == pytest.approx(right / flagged, abs=1e-3)
        assert score.recall == pytest.approx(hit / marked, abs=1e-3)
        assert score.flagged == pytest.approx(flagged / sum(m.size for m in found.values()))
    assert result.best.f1 == max(score.f1 for score in result.levels)
    # Higher sensitivity flags more and finds more of these prints' damage.
    assert result.levels[1].recall > result.levels[0].recall


def test_equal_f1_picks_the_lower_level():
    counts = np.array([50, 100, 40, 1000])
    scores = [calibrate.level_score(level, counts, 80) for level in (0.7, 0.6)]
    assert calibrate.best_level(scores).sensitivity == 0.6
    assert scores[0].precision == 0.5 and scores[0].recall == 0.5 and scores[0].flagged == 0.1


def test_no_masked_photo_or_no_marked_damage_is_a_usage_error(masked_prints, tmp_path):
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(elsewhere / "nothing.png")
    with pytest.raises(UsageError, match="has a readable mask"):
        calibrate.calibrate(str(masked_prints["images"]), str(elsewhere), "tophat")
    empty = tmp_path / "empty"
    (empty / "box").mkdir(parents=True)
    for name, (_, true) in masked_prints["truth"].items():
        Image.fromarray(np.zeros(true.shape, np.uint8)).save(empty / "box" / f"{name}.png")
    with pytest.raises(UsageError, match="mark no damage"):
        calibrate.calibrate(str(masked_prints["images"]), str(empty), "tophat")


@pytest.mark.parametrize(("options", "message"), [
    (("--levels", "0.5,1.5"), "within [0, 1]"),
    (("--levels", "half"), "numbers separated by commas"),
    (("--method", "psychic"), "unknown detector"),
    (("--detect-scale", "2"), "--detect-scale"),
])
def test_bad_options_are_refused_in_words(masked_prints, options, message):
    result = CliRunner().invoke(app, ["calibrate", str(masked_prints["images"]), "--masks",
                                      str(masked_prints["masks"]), *options])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_the_command_prints_each_level_and_the_one_to_use(masked_prints):
    before = {path: path.read_bytes() for path in masked_prints["images"].rglob("*.png")}
    result = CliRunner().invoke(app, ["calibrate", str(masked_prints["images"]), "--masks",
                                      str(masked_prints["masks"]), "--levels", "0.5,0.7"])
    assert result.exit_code == 0, result.output
    assert "auto (ran verified) on 2 masked photo(s)" in result.output  # toned prints
    assert "left out broken.png" in result.output
    picked = [line for line in result.output.splitlines() if line.endswith("<- best")]
    assert len(picked) == 1
    level = picked[0].split()[0]
    assert f"use: --sensitivity {float(level)!r}" in result.output
    assert before == {path: path.read_bytes() for path in masked_prints["images"].rglob("*.png")}


@pytest.mark.slow
def test_photos_and_masks_in_a_bucket_calibrate_as_from_folders(masked_prints, s3):
    fs = s3.filesystem()
    for folder in ("images", "masks"):
        fs.put(str(masked_prints[folder]), s3.uri(folder), recursive=True)
    local = calibrate.calibrate(str(masked_prints["images"]), str(masked_prints["masks"]),
                                "tophat", (0.5, 0.8))
    remote = calibrate.calibrate(s3.uri("images"), s3.uri("masks"), "tophat", (0.5, 0.8))
    assert sorted(remote.photos) == sorted(local.photos) == ["box/chelsea.png",
                                                              "box/coffee.png"]
    assert [vars(score) for score in remote.levels] == [vars(score) for score in local.levels]
    assert not any(secret in reason for secret in s3.secrets for _, reason in remote.skipped)


@pytest.mark.slow
def test_settings_compared_on_the_same_photos_score_as_each_alone(masked_prints):
    images, masks = str(masked_prints["images"]), str(masked_prints["masks"])
    settings = calibrate.settings_to_compare(["verified", "tophat"], both=True)
    assert settings == [("verified", False), ("verified", True), ("tophat", False)]
    results = calibrate.compare(images, masks, settings, (0.5, 0.9))
    for result, (detector, edge_wear) in zip(results, settings, strict=True):
        alone = calibrate.calibrate(images, masks, detector, (0.5, 0.9), edge_wear=edge_wear)
        assert (result.detector, result.edge_wear) == (detector, edge_wear)
        assert [vars(score) for score in result.levels] == [vars(s) for s in alone.levels]
        assert result.photos == alone.photos and result.skipped == alone.skipped
    best = calibrate.best_of(results)
    assert best.best.f1 == max(result.best.f1 for result in results)
    # Edge wear finds these small prints' worn sides: it scores apart from the verifier alone.
    assert results[1].best.recall > results[0].best.recall


def test_of_equal_settings_the_one_named_first_is_picked():
    score = calibrate.level_score(0.7, np.array([50, 100, 40, 1000]), 80)
    first, second = (calibrate.Calibration(name, [score], score, ["a.png"])
                     for name in ("combined", "verified"))
    assert calibrate.best_of([first, second]) is first
    assert calibrate.best_of([second, first]) is second


@pytest.mark.parametrize(("options", "message"), [
    (("--detect-edge-wear", "--compare-edge-wear"), "give one of them"),
    (("--method", "verified,learned", "--detect-edge-wear"), "not learned"),
    (("--method", "verified,psychic"), "unknown detector 'psychic'"),
    (("--method", ","), "no detector to calibrate"),
])
def test_bad_settings_to_compare_are_refused_in_words(masked_prints, options, message):
    result = CliRunner().invoke(app, ["calibrate", str(masked_prints["images"]), "--masks",
                                      str(masked_prints["masks"]), *options])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_the_command_names_the_setting_to_use_when_it_compares(masked_prints):
    images, masks = str(masked_prints["images"]), str(masked_prints["masks"])
    result = CliRunner().invoke(app, ["calibrate", images, "--masks", masks, "--levels",
                                      "0.5,0.9", "--method", "tophat,verified",
                                      "--compare-edge-wear"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    headers = [line.split(" on ")[0] for line in lines if "masked photo(s)" in line]
    assert headers == ["tophat", "verified", "verified with --detect-edge-wear"]
    assert sum(line.endswith("<- best") for line in lines) == 1
    best = calibrate.best_of(calibrate.compare(
        images, masks, [("tophat", False), ("verified", False), ("verified", True)], (0.5, 0.9)))
    use = next(line for line in lines if line.startswith("use: "))
    assert use.startswith(f"use: --sensitivity {best.best.sensitivity!r}"
                          + (" --detect-edge-wear" if best.edge_wear else "") + ", detector "
                          f"{best.detector} (`inpaint run --detector {best.detector}`")
    # One detector: its edge wear is part of what to use, and no detector is named.
    alone = CliRunner().invoke(app, ["calibrate", images, "--masks", masks, "--levels",
                                     "0.5,0.9", "--method", "verified", "--compare-edge-wear"])
    use = next(line for line in alone.output.splitlines() if line.startswith("use: "))
    assert use == "use: --sensitivity 0.9 --detect-edge-wear", alone.output  # F1 0.59 vs 0.30
