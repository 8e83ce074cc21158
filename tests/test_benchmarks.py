"""Smoke tests: the benchmarks run end to end on tiny inputs (no timing asserted), and the real
development set's annotations render as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def _run_benchmark(*args: str) -> None:
    """Run a benchmark script (python and `args`) from the repository root; on failure the
    assertion carries the end of its stderr, which a bare CalledProcessError does not."""
    run = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=400)
    assert run.returncode == 0, run.stderr[-4000:]


def test_speed_benchmark_runs_on_tiny_sizes(tmp_path):
    # Every part but the slow-storage one, whose two Ray start-ups were a third of this test's
    # time: tests/test_s3.py runs the same slow storage through the CLI. Its section comes
    # from the committed results (`--only` keeps the rest of speed.json).
    (tmp_path / "speed.json").write_bytes((ROOT / "benchmarks" / "results" / "speed.json")
                                          .read_bytes())
    parts = ["pipeline_efficiency", "small_items", "cost_by_canvas", "optimizer_overhead",
             "throughput", "peak_memory", "batched_crops"]
    _run_benchmark(str(ROOT / "benchmarks" / "speed.py"), "--quick", "--method", "telea",
                   "--out", str(tmp_path), "--only", *parts)
    table = (tmp_path / "speed.md").read_text()
    for heading in ("Pipeline efficiency", "Small items at loop speed",
                    "Storage that answers slowly", "Cost follows the damage", "Optimizer overhead",
                    "Throughput by method", "Peak memory", "Crops per second by batch size"):
        assert heading in table
    assert (tmp_path / "speed.png").stat().st_size > 0


def _benchmark_module(path: str):
    """A benchmark script (`path` under benchmarks/), imported by path (benchmarks is no
    package; the scripts import each other as top-level modules, so a test that loads one
    puts benchmarks/ on sys.path first)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / "benchmarks" / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_set_annotations_render_in_order():
    """Candidates fire on a bright line and a bright blob; the blob's polygon is erased, a
    corridor brings back the part of the line that crosses it, a stroke and a fill add, and
    `remove` clears last."""
    render = _benchmark_module("real/render_masks.py").render
    photo = np.full((60, 80, 3), 100, np.uint8)
    photo[30, 5:75] = 160  # a 1-px bright crack across the photo
    photo[5:12, 5:12] = 170  # a bright blob (say, a highlight on an eye)
    spec = {"kind": "bright", "median": 7, "low": 20, "high": 40, "min_length": 3}
    note = {"candidates": [spec],
            "erase": [[[0, 0], [40, 0], [40, 59], [0, 59]]],
            "corridor_candidate": spec,
            "corridors": [{"points": [[10, 30], [30, 30]], "width": 5}],
            "strokes": [{"points": [[60, 50], [70, 50]], "width": 1}],
            "fill": [[[70, 0], [79, 0], [79, 8], [70, 8]]],
            "remove": [[[50, 25], [55, 25], [55, 35], [50, 35]]]}
    mask = render(photo, note)
    assert not mask[5:12, 5:12].any()  # erased picture
    assert mask[30, 12:29].all() and not mask[30, 35:40].any()  # corridor only
    assert mask[30, 45:50].all() and not mask[30, 50:56].any()  # candidate, then removed
    assert mask[50, 60:71].all() and mask[0:9, 70:80].all()  # stroke and fill
    assert not mask[29].any() and not mask[31].any()  # the line's own width, not a band


@pytest.mark.slow
def test_real_detection_benchmark_runs_on_a_synthetic_photo(tmp_path):
    """The real-set benchmark scores a photo against its mask and writes its figure outside
    the repository; the real prints are never needed (their licence is unclear)."""
    from pipeline.damage import add_damage
    from tests.conftest import small_photo
    damage = add_damage(small_photo("chelsea", 128), seed=3)
    height, width = damage.mask.shape
    (tmp_path / "photos").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "syn.png"), cv2.cvtColor(damage.image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "masks" / "syn.png"), damage.mask.astype(np.uint8) * 255)
    script = str(ROOT / "benchmarks" / "detect_real.py")
    common = ["--photos", str(tmp_path / "photos"), "--masks", str(tmp_path / "masks"),
              "--sensitivity", "0.5", "--out", str(tmp_path / "real.md")]
    _run_benchmark(script, *common, "--figures", str(tmp_path / "figures"), "--sweep", "0.5",
                   "1.0", "--sweep-detectors", "auto", "combined")
    table = (tmp_path / "real.md").read_text()
    assert "## `combined` by sensitivity" in table and "--sweep-detectors auto combined" in table
    row = next(line for line in table.splitlines() if line.startswith("| syn |"))
    precision, recall, f1 = (float(cell) for cell in row.split("|")[2:5])
    assert 0 <= precision <= 1 and 0 <= recall <= 1 and 0 <= f1 <= 1
    assert "| **pooled** |" in table
    missed = table.split("Missed, pooled: ")[1].split(".\n")[0]  # under the first table
    count, shares = int(missed.split()[0]), missed.split("by where they lie: ")[1]
    total = sum(int(part.split()[-1].rstrip("%")) for part in shares.split(", "))
    assert total in (99, 100, 101) if count else total == 0
    assert count > 0 or recall == 1.0  # nothing missed: all found
    # The sweep's table: one "precision / recall" cell per sensitivity, its 0.5 the same
    # detection as the main table's, and a higher sensitivity finds at least as much.
    swept = table.split("by sensitivity")[1]
    cells = next(line for line in swept.splitlines() if line.startswith("| syn |")).split("|")
    (p_low, r_low), (_, r_high) = ([float(x) for x in cell.split("/")] for cell in cells[2:4])
    assert (p_low, r_low) == (round(precision, 2), round(recall, 2))
    assert r_high >= r_low
    shown = cv2.imread(str(tmp_path / "figures" / "syn-auto-sensitivity0.5.png"))
    assert shown.shape == (height, 4 * width + 3 * 6, 3)  # photo | found | true | restored
    # With --detect-edge-wear the same photo's table says so, and flags at least as much.
    _run_benchmark(script, *common[:-1], str(tmp_path / "worn.md"), "--no-figures",
                   "--detect-edge-wear")
    worn = (tmp_path / "worn.md").read_text()
    assert "--detect-edge-wear`." in worn and "--detect-edge-wear" not in table
    flagged = [float(next(line for line in text.splitlines() if line.startswith("| syn |"))
                     .split("|")[5].strip().rstrip("%")) for text in (table, worn)]
    assert flagged[1] >= flagged[0]
    refused = subprocess.run([sys.executable, script, *common, "--figures",
                              str(ROOT / "benchmarks" / "results")],
                             cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert refused.returncode != 0 and "inside the repository" in refused.stderr


def test_real_set_split_half_picks_on_one_half_and_scores_the_other(monkeypatch):
    """Each split's level is the one with the best pooled F1 on its tuning half, and the
    held-out cells are the other half's scores at that level, not the tuning half's."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = _benchmark_module("detect_real.py")

    def score(precision, recall):
        return {"precision": precision, "recall": recall, "found_pixels": 100.0,
                "true_pixels": 100.0, "megapixels": 1.0, "seconds": 0.0}
    # Photos w and x do best at 1.0, y and z at 0.5.
    columns = {0.5: [score(1, .2), score(1, .2), score(1, .9), score(1, .9)],
               1.0: [score(.9, .9), score(.9, .9), score(.2, .9), score(.2, .9)]}
    lines = module.split_half_table(["w", "x", "y", "z"], columns, "verified")
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines if line.startswith("| ")
            and not line.startswith("| tuned")]
    assert len(rows) == 6 and {(r[0], r[2]) for r in rows} >= {("w, x", "y, z"), ("y, z", "w, x")}
    by_split = {(r[0], r[2]): r for r in rows}
    assert by_split["w, x", "y, z"][1:] == ["1.0", "y, z", "0.20 / 0.90 / 0.33",
                                            "1.00 / 0.90 / 0.95"]
    assert by_split["y, z", "w, x"][1] == "0.5"
    assert module.split_half_table(["w"], {0.5: [score(1, 1)]}, "verified") == []


@pytest.mark.slow
def test_real_gap_benchmark_runs_on_synthetic_stand_ins(tmp_path):
    """The real-gap benchmark compares features and trains its transfer perceptrons on two
    stand-in prints (the real ones are never needed); one training photo keeps it quick."""
    from pipeline.damage import add_print_damage
    from tests.conftest import small_photo
    (tmp_path / "photos").mkdir()
    (tmp_path / "masks").mkdir()
    for stem, name, seed in (("p", "coffee", 1), ("q", "astronaut", 2)):
        damage = add_print_damage(small_photo(name, 160), seed=seed)
        cv2.imwrite(str(tmp_path / "photos" / f"{stem}.png"),
                    cv2.cvtColor(damage.image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(tmp_path / "masks" / f"{stem}.png"), damage.mask.astype(np.uint8) * 255)
    out = tmp_path / "gap.md"
    _run_benchmark(str(ROOT / "benchmarks" / "real_gap.py"), "--photos", str(tmp_path / "photos"),
                   "--masks", str(tmp_path / "masks"), "--transfer", "--train-photos", "logo",
                   "--clean-photos", "chelsea", "--out", str(out))
    text = out.read_text()
    assert "### damage pixels" in text and "### picture pixels" in text
    gap = text.split("## Transfer")[0]
    aucs = [float(line.split("|")[2]) for line in gap.splitlines()
            if line.startswith("| ") and "AUC" not in line]
    assert aucs and all(0 <= auc <= 1 for auc in aucs)
    rows = [line for line in text.splitlines() if line.startswith("| synthetic")]
    # Each print held out once: scored by the synthetic-only perceptron and by one trained
    # with the other print too.
    assert [row.split("|")[1:3] for row in rows] == [
        [" synthetic only ", " q "], [" synthetic + p ", " q "],
        [" synthetic only ", " p "], [" synthetic + q ", " p "]]


@pytest.mark.slow
def test_plan_memory_benchmark_runs_on_tiny_sizes(tmp_path):
    import json

    results = tmp_path / "speed.md"
    results.write_text("# Speed\n\n## Notes\n")
    _run_benchmark(str(ROOT / "benchmarks" / "plan_memory.py"), "--sizes", "20", "30",
                   "--folder", str(tmp_path / "archive"), "--json", str(tmp_path / "f.json"),
                   "--results", str(results))
    figures = json.loads((tmp_path / "f.json").read_text())
    assert [(f["mode"], f["items"]) for f in figures] == [
        (mode, size) for size in (20, 30) for mode in ("plan", "resume", "dry-run")]
    assert [(f["todo"], f["done"]) for f in figures if f["mode"] != "dry-run"] == [
        (20, 0), (0, 20), (30, 0), (0, 30)]
    text = results.read_text()
    assert text.startswith("# Speed\n\n## Notes\n") and "| dry-run | 30 |" in text


@pytest.mark.slow
def test_detector_training_pool_makes_old_prints_when_asked(monkeypatch):
    """`train_detector.py --prints`: the share of the pool made old prints carries print
    damage as its target, and its blur ring stays out of the loss."""
    from tests.conftest import small_photo

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import train_detector

    # RGB, as `photos.load_photo` gives the training photos.
    photos = [np.dstack([small_photo("camera", 200)] * 3), small_photo("chelsea", 200)[:, :, :3]]
    pool = train_detector.damaged_pool(photos, np.random.default_rng(0), star_fields=0,
                                       prints=1.0)
    assert len(pool) == len(photos) * train_detector.VARIANTS
    for pixels, target, weight in pool:
        assert pixels.ndim == 3 and target.shape == weight.shape == pixels.shape[:2]
        assert target.any()
        assert (weight[target > 0] == train_detector.POSITIVE_WEIGHT).all()
        ring = train_detector.blur_ring(target > 0) & (target == 0)
        assert (weight[ring] == 0).all()
    # Without --prints the same draws give a digital photo's damage instead.
    digital = train_detector.damaged_pool(photos, np.random.default_rng(0), 0, prints=0.0)
    assert not any(np.array_equal(a[0], b[0]) for a, b in zip(digital, pool, strict=True))


@pytest.mark.slow
def test_clean_real_benchmark_tables_what_auto_flags(tmp_path):
    """detect_clean_real.py on a gray and a colour photo: the main table says what `auto`
    runs on each, and the sweep's first column is the main table's share for that detector."""
    from tests.conftest import small_photo
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "gray.png"), small_photo("camera", 128))
    cv2.imwrite(str(photos / "colour.png"),
                cv2.cvtColor(small_photo("chelsea", 128)[:, :, :3], cv2.COLOR_RGB2BGR))
    script = str(ROOT / "benchmarks" / "detect_clean_real.py")
    out = tmp_path / "clean.md"
    _run_benchmark(script, "--photos", str(photos), "--out", str(out), "--figures",
                   str(tmp_path / "figures"), "--sweep", "0.5", "1.0")
    main, swept = out.read_text().split("by sensitivity")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in main.splitlines() if line.startswith("| gray") or
            line.startswith("| colour")}
    assert rows["gray.png"][4] == "`verified`" and rows["colour.png"][4] == "`learned`"
    sweep = [[c.strip() for c in line.split("|")[1:-1]] for line in swept.splitlines()
             if line.startswith("| gray") or line.startswith("| colour")]
    assert [row[0] for row in sweep] == ["gray.png", "colour.png"]  # prints first
    for name, detector, at_half, _ in sweep:
        column = 5 if detector == "`learned`" else 7  # learned flagged | s/MP | verified flagged
        assert at_half == rows[name][column]
    assert (tmp_path / "figures" / "gray.png").exists()


@pytest.mark.slow
def test_the_combined_detectors_weight_is_what_its_benchmark_picks(tmp_path):
    """benchmarks/combined_weight.py picks the print net's weight on held-out prints by the
    verifier's calibration rule; the shipped NET_WEIGHT must be its pick."""
    from pipeline.detectors import combined
    out = tmp_path / "weight.md"
    _run_benchmark(str(ROOT / "benchmarks" / "combined_weight.py"), "--out", str(out))
    text = out.read_text()
    assert f"Picked: {combined.NET_WEIGHT}" in text
    assert len([line for line in text.splitlines() if line.startswith("| 0.")]) == 3


@pytest.mark.slow
def test_calibration_split_half_picks_on_one_photo_and_scores_the_other(tmp_path):
    """On two stand-in prints, each split's pick is what `inpaint calibrate` picks on its
    tuning photo, and its held-out cell is the other photo's score at that pick."""
    from pipeline import calibrate
    from pipeline.damage import add_print_damage
    from tests.conftest import small_photo

    for name, seed in (("chelsea", 1), ("coffee", 2)):
        damage = add_print_damage(small_photo(name, 128), seed=seed)
        for folder, pixels in (("photos", damage.image[:, :, ::-1]),
                               ("masks", damage.mask.astype(np.uint8) * 255)):
            for where in (tmp_path / folder, tmp_path / name / folder):  # both, one alone
                where.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(where / f"{name}.png"), pixels)
    out = tmp_path / "calibrate-real.md"
    _run_benchmark(str(ROOT / "benchmarks" / "calibrate_real.py"), "--photos",
                   str(tmp_path / "photos"), "--masks", str(tmp_path / "masks"), "--detectors",
                   "verified", "tophat", "--levels", "0.5", "0.9", "--out", str(out))
    rows = [line.split(" | ") for line in out.read_text().splitlines()
            if line.startswith("| chelsea |") or line.startswith("| coffee |")]
    assert [row[0] for row in rows] == ["| chelsea", "| coffee"]
    settings = [("verified", False), ("verified", True), ("tophat", False), ("auto", False)]
    for tuning, held in (("chelsea", "coffee"), ("coffee", "chelsea")):
        row = next(row for row in rows if row[0] == f"| {tuning}")
        pick = calibrate.best_of(calibrate.compare(
            str(tmp_path / tuning / "photos"), str(tmp_path / tuning / "masks"), settings,
            (0.5, 0.9)))
        wear = " + edge wear" if pick.edge_wear else ""
        assert row[1] == f"`{pick.detector}`{wear} at {pick.best.sensitivity}"
        other = calibrate.compare(str(tmp_path / held / "photos"), str(tmp_path / held / "masks"),
                                  [(pick.detector, pick.edge_wear)], (0.5, 0.9))[0]
        score = next(s for s in other.levels if s.sensitivity == pick.best.sensitivity)
        assert row[2] == held
        assert row[3] == f"{score.precision:.2f} / {score.recall:.2f} / {score.f1:.2f}"


def test_missed_marks_are_counted_by_where_they_lie(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = _benchmark_module("detect_real.py")
    true = np.zeros((200, 200), bool)
    true[1:4, 60:140] = True        # along the top edge: the frame zone (10 px here)
    true[50:52, 40:160] = True      # a thin scratch
    true[100:104, 100:104] = True   # a speck (16 px)
    true[140:170, 30:70] = True     # a wide flake
    found = np.zeros_like(true)
    found[50:52, 40:100] = True     # half the scratch found
    missed = module.missed_by_kind(found, true)
    assert missed == {"frame zone": 240, "thin lines": 2 * 58, "specks": 16,
                      "wide areas": 30 * 40}
    assert "frame zone 15%" in module.missed_line([missed])
