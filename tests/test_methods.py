"""Every registered method on gray, RGB, RGBA and 16-bit photos; crops paste back exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.masks import synthetic_mask
from pipeline.methods import inpaint, load_method, method_names
from pipeline.methods.base import Fill, Method, hole_regions
from pipeline.methods.hallucinate import wide_holes
from pipeline.optimizer import optimize_batch
from pipeline.prior import load_prior
from tests.conftest import small_photo

# Few steps keep the optimiser methods fast; the benchmark judges their quality.
FAST = {"tv": {"steps": 3},
        "hallucinate": {"steps": 3, "hallucination_weight": 0.2, "hallucination_radius": 0}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def photo_as(mode: str) -> np.ndarray:
    rgb = small_photo("chelsea", 48)
    if mode == "gray":
        return rgb.mean(axis=2).astype(np.uint8)
    if mode == "rgba":
        alpha = np.linspace(0, 255, rgb.shape[1]).astype(np.uint8)
        return np.dstack([rgb, np.broadcast_to(alpha, rgb.shape[:2])])
    if mode == "rgb16":
        return rgb.astype(np.uint16) * 257 + 3
    return rgb


def damage(photo: np.ndarray) -> np.ndarray:
    hole = np.zeros(photo.shape[:2], bool)
    hole[8:20, 10:26] = True  # wide enough for the optimiser
    hole[30, 4:40] = True  # a scratch
    return hole


@pytest.mark.parametrize("mode", ["gray", "rgb", "rgba", "rgb16"])
@pytest.mark.parametrize("name", method_names())
def test_every_method_fills_every_kind_of_photo(name, mode):
    photo = photo_as(mode)
    hole = damage(photo)
    damaged = photo.copy()
    damaged[hole] = np.iinfo(photo.dtype).max
    filled = load_method(name, FAST.get(name))(damaged, hole).pixels
    assert filled.shape == photo.shape and filled.dtype == photo.dtype
    assert np.array_equal(filled[~hole], damaged[~hole])
    if mode == "rgba":
        assert np.array_equal(filled[:, :, 3], damaged[:, :, 3])
        filled, damaged, photo = filled[:, :, :3], damaged[:, :, :3], photo[:, :, :3]
    # Every method gets much closer to the truth than the white it was given.
    error = np.abs(filled[hole].astype(float) - photo[hole]).mean()
    assert error < 0.5 * np.abs(damaged[hole].astype(float) - photo[hole]).mean()


class Recorder(Method):
    """Fills with a constant and remembers the crops it was handed."""

    name = "recorder"

    def __init__(self):
        super().__init__()
        self.crops = []

    def fill(self, image, mask):
        self.crops.append(image.shape[:2])
        return Fill(np.full_like(image, 0.5))


def test_crops_paste_back_exactly():
    photo = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    hole = np.zeros(photo.shape[:2], bool)
    hole[10:20, 10:30] = True
    hole[150:160, 250:290] = True
    method = Recorder()
    filled = method(photo, hole).pixels
    # Each hole with 24 px of context, clipped at the frame: not the whole 200x300 photo.
    boxes = [(0, 0, 44, 54), (126, 226, 184, 300)]
    assert hole_regions(hole, 24) == boxes
    assert method.crops == [(b - t, r - left) for t, left, b, r in boxes]
    assert np.array_equal(filled[~hole], photo[~hole])
    assert (filled[hole] == 128).all()


def test_big_scans_group_holes_on_a_coarse_grid_without_losing_context():
    hole = np.zeros((3000, 4000), bool)  # 12 MP: grouped on 4x4-px cells
    hole[1001:1004, 501:1700] = True
    hole[2990:, 3990:] = True
    hole[1502, 2003] = True
    boxes = hole_regions(hole, 24)
    assert len(boxes) == 3
    assert sum(hole[t:b, left:r].sum() for t, left, b, r in boxes) == hole.sum()
    for top, left, bottom, right in boxes:
        rows, columns = np.nonzero(hole[top:bottom, left:right])
        margins = [rows.min(), bottom - top - 1 - rows.max(),
                   columns.min(), right - left - 1 - columns.max()]
        at_frame = [top == 0, bottom == hole.shape[0], left == 0, right == hole.shape[1]]
        for margin, clipped in zip(margins, at_frame, strict=True):
            assert clipped or 24 <= margin < 24 + 4


def test_hallucinate_reports_its_prior_for_the_manifest():
    method = load_method("hallucinate")
    assert method.model_name == "efficientnet_lite0"
    assert method.weights_sha256 == load_prior().weights_sha256


def test_the_seed_makes_hallucinate_reproducible():
    photo = photo_as("rgb")
    hole = damage(photo)
    params = FAST["hallucinate"]
    runs = [inpaint(photo, hole, "hallucinate", seed=seed, **params) for seed in (3, 3, 4)]
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_thin_holes_keep_the_smooth_fill():
    photo = small_photo("coffee", 64)
    scratch = synthetic_mask("scratch", *photo.shape[:2], seed=1)
    wide, _ = wide_holes(scratch, thin_radius=4.5)
    assert not wide.any()
    blob = synthetic_mask("blob", *photo.shape[:2], seed=1)
    wide, radius = wide_holes(blob, thin_radius=4.5)
    assert np.array_equal(wide, blob) and radius > 5
    result = load_method("hallucinate")(photo, scratch)
    assert np.array_equal(result.pixels, load_method("biharmonic")(photo, scratch).pixels)
    assert result.iterations is None


def test_blobs_start_from_the_patch_detail_and_narrower_holes_from_the_mirror():
    """The cross-validated rule: a crop whose widest hole reaches coarse_radius starts from
    `blob_init` (patch-detail), a narrower one from `init` (mirror)."""
    photo = small_photo("coffee", 256).astype(np.float32)[:, :, :3] / 255
    method = load_method("hallucinate")
    for kind, expected, other in (("blob", "patch-detail", "mirror"),
                                  ("strokes", "mirror", "patch-detail")):
        hole = synthetic_mask(kind, *photo.shape[:2], seed=2)
        _, radius = wide_holes(hole, method.params.thin_radius)
        assert (radius >= method.params.coarse_radius) == (kind == "blob")
        start = method.plan(photo, hole).start
        as_expected = load_method("hallucinate", {"init": expected, "blob_init": expected})
        as_other = load_method("hallucinate", {"init": other, "blob_init": other})
        assert np.array_equal(start, as_expected.plan(photo, hole).start)
        assert not np.array_equal(start, as_other.plan(photo, hole).start)


@pytest.mark.parametrize("kind", ["strokes", "blob"])
def test_a_second_fill_is_averaged_into_the_wide_holes_only(kind):
    """`average_with` (strokes) and `blob_average_with` (blobs): the share of the second fill
    in the wide holes; thin holes and known pixels keep what they had."""
    photo = small_photo("coffee", 256).astype(np.float32)[:, :, :3] / 255
    hole = synthetic_mask(kind, *photo.shape[:2], seed=2)
    hole[-8, 10:120] = True  # a scratch: a thin hole the average must not touch
    wide, _ = wide_holes(hole, 4.5)
    prefix = "blob_" if kind == "blob" else ""
    plain = load_method("tv", {"steps": 0}).fill(photo, hole).pixels
    partner = load_method("tv", {"steps": 0, "init": "fsr", "blob_init": "fsr"}).fill(
        photo, hole).pixels
    averaged = load_method("tv", {"steps": 0, f"{prefix}average_with": "fsr",
                                  f"{prefix}average_share": 0.25}).fill(photo, hole).pixels
    assert not np.allclose(plain[wide], partner[wide], atol=0.01)
    assert np.allclose(averaged[wide], 0.75 * plain[wide] + 0.25 * partner[wide], atol=1e-5)
    assert np.array_equal(averaged[~wide], plain[~wide])
    other = "average_with" if kind == "blob" else "blob_average_with"
    assert np.array_equal(load_method("tv", {"steps": 0, other: "fsr"}).fill(photo, hole).pixels,
                          plain)

def test_fsr_luminance_moves_only_the_luminance_of_a_colour_crop():
    """fsr-luminance: FSR on the channel mean; each channel of the wide holes moves by the
    share of its difference from the optimised fill's luminance, so the fill's colour (the
    channels' differences) stays the optimised fill's. A one-channel crop gets FSR itself."""
    from pipeline.methods.classical import fsr_fill

    photo = small_photo("coffee", 128).astype(np.float32)[:, :, :3] / 255
    hole = synthetic_mask("strokes", *photo.shape[:2], seed=2)
    wide, _ = wide_holes(hole, 4.5)
    plain = load_method("tv", {"steps": 0}).fill(photo, hole).pixels
    params = {"steps": 0, "average_with": "fsr-luminance", "average_share": 0.25}
    averaged = load_method("tv", params).fill(photo, hole).pixels
    luminance = photo.mean(axis=2, keepdims=True)
    partner = fsr_fill(luminance, hole)[wide][:, 0]
    moved = averaged[wide] - plain[wide]
    expected = 0.25 * (partner - plain[wide].mean(axis=1))
    inside = (averaged[wide] > 0).all(axis=1) & (averaged[wide] < 1).all(axis=1)  # unclipped
    assert np.allclose(moved[inside], expected[inside, None], atol=1e-5)
    assert np.abs(expected).max() > 0.05  # FSR differs from the optimised fill
    assert np.array_equal(averaged[~wide], plain[~wide])
    gray = luminance.copy()
    assert np.array_equal(load_method("tv", params).fill(gray, hole).pixels,
                          load_method("tv", params | {"average_with": "fsr"}).fill(
                              gray, hole).pixels)


def test_averaged_crops_stop_at_average_steps_and_blobs_keep_steps():
    """The optimiser gives the averaged crops' FSR time back: `average_steps` caps them,
    while blob crops (widest hole at least coarse_radius) keep `steps`; with no second fill,
    `steps` caps every crop. `tv` has no second fill by default, `hallucinate` has FSR."""
    photo = small_photo("coffee", 128).astype(np.float32)[:, :, :3] / 255
    stroke = np.zeros(photo.shape[:2], bool)
    stroke[40:60, 20:100] = True
    blob = np.zeros(photo.shape[:2], bool)
    blob[20:100, 20:100] = True
    # No plateau stop: only the caps end these runs. A mirror start for blobs: the patch
    # synthesis would only cost time here.
    averaged = load_method("tv", {"average_with": "fsr-luminance", "average_steps": 2,
                                  "patience": 100, "blob_init": "mirror"})
    assert averaged.fill(photo, stroke).iterations == 2
    assert averaged.plan(photo, blob).steps == averaged.params.steps == 8
    assert load_method("tv", {"patience": 100}).fill(photo, stroke).iterations == 8
    assert load_method("tv").params.average_with == "none"
    from pipeline.methods.hallucinate import HallucinateParams

    defaults = HallucinateParams()  # without loading the prior network
    assert (defaults.average_with, defaults.average_steps) == ("fsr-luminance", 2)


@pytest.mark.slow
def test_quality_benchmark_runs(tmp_path: Path):
    script = Path(__file__).parents[1] / "benchmarks" / "quality.py"
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=600)
    table = (tmp_path / "quality.md").read_text()
    assert "`hallucinate`" in table and "`biharmonic`" in table
    assert (tmp_path / "quality.png").stat().st_size > 0


def test_term_weights_follow_the_hole_width():
    method = load_method("hallucinate", {"hallucination_weight": 0.3})
    stroke, blob = method.term_weights(6.0), method.term_weights(60.0)
    assert stroke.hallucination == 0 and blob.hallucination == 0.3
    full = method.params.context_weight
    assert stroke.context == full * 6 / 12 and blob.context == full
    assert load_method("tv").term_weights(60.0).context == 0


@pytest.mark.parametrize("name", ["tv", "hallucinate"])
def test_crops_of_several_photos_share_forward_passes_and_fail_alone(name, monkeypatch):
    """A Ray batch's photos go through `call_many`: their crops are bucketed and optimised
    together, and a photo that cannot be filled fails alone."""
    from pipeline.methods import hallucinate

    batch_sizes = []

    def counted(images, *args, **kwargs):
        batch_sizes.append(len(images))
        return optimize_batch(images, *args, **kwargs)

    monkeypatch.setattr(hallucinate, "optimize_batch", counted)
    photos = [small_photo(photo, 48) for photo in ("chelsea", "coffee", "rocket")]
    holes = [damage(photo) for photo in photos]
    everything = np.ones(photos[0].shape[:2], bool)
    params = FAST[name] | {"batch_pixels": 10**6}
    method = load_method(name, params)
    outcomes = method.call_many([*zip(photos, holes, strict=True), (photos[0], everything)])
    assert isinstance(outcomes[3], Exception) and "nothing to fill" in str(outcomes[3])
    assert batch_sizes == [3]  # the three wide holes, one forward pass per step
    for photo, hole, outcome in zip(photos, holes, outcomes[:3], strict=True):
        assert np.array_equal(outcome.pixels[~hole], photo[~hole])
        alone = method(photo, hole)
        # Sharing a bucket pads a crop to the bucket's shape: close to its fill alone.
        difference = np.abs(outcome.pixels.astype(int) - alone.pixels)[hole]
        assert outcome.iterations and difference.mean() < 6


@pytest.mark.parametrize("tone", [0, 255])
def test_the_plateau_stop_acts_with_the_defaults_on_a_flat_photo(tone):
    # TV's gradient on a flat fill is zero: the loss stays put, and with the defaults (8 steps,
    # a window of 3 after the first) the stop comes at step 5, before the cap.
    photo = np.full((96, 96, 3), tone, np.uint8)
    hole = np.zeros(photo.shape[:2], bool)
    hole[30:60, 30:60] = True
    params = load_method("tv").params
    assert params.patience < params.steps
    assert load_method("tv")(photo, hole).iterations == 1 + params.patience + 1


def test_on_a_real_photo_the_cap_is_the_stop():
    # What the README says: on photos, the loss still falls by more than 0.2% over 3 steps at
    # step 8, so the optimiser runs every step of the cap; a hole averaged with FSR (the
    # default for holes narrower than coarse_radius) has the smaller cap `average_steps`.
    photo = small_photo("chelsea", 96)
    hole = np.zeros(photo.shape[:2], bool)
    hole[30:50, 40:60] = True
    method = load_method("hallucinate")
    assert method(photo, hole).iterations == method.params.average_steps == 2
    alone = load_method("hallucinate", {"average_with": "none"})
    assert alone(photo, hole).iterations == alone.params.steps == 8


def test_each_photo_has_its_own_time_budget(monkeypatch):
    """A slow photo spends only its own budget: a photo beside it in the batch is filled as it
    is alone. Time is a clock that moves one second per reading (no real timing): planning a
    photo costs 1 s, each optimisation step 1 s shared by the crops in its pass."""
    import itertools

    from pipeline import optimizer

    ticks = itertools.count()
    monkeypatch.setattr(optimizer, "clock", lambda: float(next(ticks)))
    slow = small_photo("chelsea", 128)
    slow_hole = np.zeros(slow.shape[:2], bool)
    slow_hole[10:26, 8:24] = slow_hole[50:66, 100:116] = True  # two crops of 8 steps each
    assert len(hole_regions(slow_hole, 24)) == 2
    quick = small_photo("coffee", 64)
    quick_hole = np.zeros(quick.shape[:2], bool)
    quick_hole[20:36, 20:36] = True
    # 10 s each; one crop per pass; no plateau, so only the cap and the budget stop a crop.
    method = load_method("tv", {"time_budget_s": 10, "batch_pixels": 1, "patience": 100})
    together = method.call_many([(slow, slow_hole), (quick, quick_hole)])
    alone = method.call_many([(quick, quick_hole)])[0]
    # The slow photo: 1 s planning + 8 steps of its first crop, then 1 step of the second.
    assert together[0].iterations == 9
    # The quick one: 1 s planning + its 8 steps, all of them, as alone.
    assert together[1].iterations == alone.iterations == 8
    assert np.array_equal(together[1].pixels, alone.pixels)


def test_the_default_stays_close_to_the_best_classical_fill():
    """A quality regression test of `hallucinate` with its defaults, on a fixed photo and mask:
    HaarPSI and hole PSNR against the best of the classical fills, with a margin; a flat
    mid-gray fill must fail it by far. Measured: hallucinate .776 / 17.7 dB, best classical
    .797 (biharmonic) / 18.1 dB (biharmonic), mid-gray .570 / 14.1 dB. One photo and mask
    decide nothing (the held-out benchmark does): this is a development photo, and here the
    stroke over the cat's eye takes FSR's blotches at half strength (without averaging .815;
    on three photos and four masks at this size the two defaults tie, .791 / .789)."""
    import piq
    import torch

    def haarpsi(filled):
        tensor = [torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None]
                  for a in (filled, photo)]
        return float(piq.haarpsi(*tensor, data_range=1.0))

    def hole_psnr(filled):
        error = (filled[hole].astype(float) - photo[hole]) / 255
        return float(10 * np.log10(1 / np.mean(error**2)))

    photo = small_photo("chelsea", 256)
    hole = synthetic_mask("strokes", *photo.shape[:2], seed=1)
    damaged = photo.copy()
    damaged[hole] = 255
    classical = [load_method(name)(damaged, hole).pixels
                 for name in ("telea", "ns", "fsr", "biharmonic")]
    best_haarpsi = max(haarpsi(filled) for filled in classical)
    best_psnr = max(hole_psnr(filled) for filled in classical)

    def good_enough(filled):
        return haarpsi(filled) >= best_haarpsi - 0.03 and hole_psnr(filled) >= best_psnr - 1.0

    gray = damaged.copy()
    gray[hole] = 128
    assert not good_enough(gray)
    default = load_method("hallucinate")(damaged, hole).pixels
    assert good_enough(default), (haarpsi(default), best_haarpsi, hole_psnr(default), best_psnr)
