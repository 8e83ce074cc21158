"""`pipeline.report`: the static run report, built from real manifests, files and S3."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline import manifest, report
from pipeline.cli import app
from pipeline.masks import synthetic_mask
from tests.conftest import save, save_mask, small_photo

HOSTILE = "<img src=x onerror=alert(1)>.jpg"
HOSTILE_ERROR = "<script>alert('boom')</script> cannot decode"
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def put_item(root: Path, relative: str, name: str = "chelsea", seed: int = 0) -> dict[str, str]:
    """A real photo, its mask and an 'output' (the photo itself) on disk."""
    photo = small_photo(name, 128)
    image = save(photo, root / "images" / relative)
    mask = save_mask(synthetic_mask("strokes", *photo.shape[:2], seed=seed),
                     (root / "masks" / relative).with_suffix(".png"))
    output = save(photo, root / "out" / relative)
    return {"image_uri": str(image), "mask_uri": str(mask), "output_uri": str(output)}


def row(relative: str, status: str = "ok", at: int = 0, **fields) -> dict:
    began = T0 + timedelta(seconds=at)
    return manifest.empty_row() | {
        "item_id": f"id{abs(hash(relative)) % 10**12:012d}", "relative_path": relative,
        "status": status, "method": "telea", "params": json.dumps({"method": "telea"}),
        "width": 128, "height": 85, "hole_fraction": 0.1, "seconds": 0.5, "input_bytes": 1000,
        "output_bytes": 900 if status != "failed" else None, "worker": "host:1",
        "device": "cpu", "started_at": began, "finished_at": began + timedelta(seconds=1),
    } | fields


def write_run(uri: str, run_id: str, rows: list[dict], storage_options=None) -> None:
    writer = manifest.ManifestWriter(uri, run_id, storage_options)
    writer.add(rows)
    writer.flush()


@pytest.fixture
def two_runs(tmp_path: Path) -> dict:
    """An older run of one item, then a newer one: ok items (one hostile name), a failure
    with a hostile message, and a skip."""
    root = tmp_path
    uri = str(root / "out" / "_manifest")
    write_run(uri, "run-old", [row("old.jpg", **put_item(root, "old.jpg"))])
    newer = [
        row("a/cat.jpg", at=100, hole_fraction=0.4, **put_item(root, "a/cat.jpg", seed=1)),
        row(HOSTILE, at=101, seconds=3.0, **put_item(root, HOSTILE, "coffee", seed=2)),
        row("broken.jpg", "failed", at=102, error=HOSTILE_ERROR, error_kind="decode",
            image_uri=str(root / "images" / "broken.jpg")),
        row("blank.jpg", "skipped", at=103, error="empty mask: nothing to fill, input copied"),
    ]
    write_run(uri, "run-new", newer)
    return {"root": root, "uri": uri, "report": root / "out" / "_report"}


def test_report_shows_the_latest_run_with_history_and_counts(two_runs):
    index = report.build(two_runs["uri"], str(two_runs["report"]))
    assert index == str(two_runs["report"] / "index.html")
    html = Path(index).read_text()
    assert "run <code>run-new</code>" in html
    counts = dict(re.findall(r'data-count="(\w+)">(\d+)<', html))
    assert counts == {"total": "4", "ok": "2", "skipped": "1", "failed": "1"}
    history = html[html.index('id="history"'):]
    assert history.index("run-new") < history.index("run-old")  # newest first
    assert "empty mask: nothing to fill, input copied" in html
    assert re.search(r"<code>decode</code>: <span data-group-count=\"failed\">1<", html)
    assert (two_runs["report"] / "seconds.png").stat().st_size > 0
    assert (two_runs["report"] / "holes.png").stat().st_size > 0


def test_user_strings_are_text_and_links_are_quoted(two_runs):
    html = Path(report.build(two_runs["uri"], str(two_runs["report"]))).read_text()
    assert "<img src=x" not in html and "<script>alert" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in html
    assert "&lt;script&gt;alert(&#39;boom&#39;)&lt;/script&gt;" in html
    assert f'href="../{quote(HOSTILE)}"' in html
    assert "<script" not in html.lower()  # the page itself runs no code


def test_gallery_thumbnails_long_side_256_with_outline_layer(two_runs):
    html = Path(report.build(two_runs["uri"], str(two_runs["report"]))).read_text()
    sources = re.findall(r'<img class="(damaged|outline|restored)" src="([^"]+)"', html)
    assert len(sources) == 6  # two ok items, three layers each
    for kind, source in sources:
        with Image.open(two_runs["report"] / source) as image:
            assert max(image.size) == 128  # the photos are 128 px: never enlarged
            if kind == "outline":
                alpha = np.asarray(image)[:, :, 3]
                assert 0 < (alpha > 0).mean() < 1
    assert re.search(r'<input type="checkbox" id="show-outline" checked>', html)


def test_large_photo_thumbnails_have_a_long_side_of_256(tmp_path):
    photo = np.asarray(Image.fromarray(small_photo("astronaut", 512)))
    image = save(photo, tmp_path / "big.png")
    mask = save_mask(synthetic_mask("blob", 512, 512, seed=1), tmp_path / "mask.png")
    write_run(str(tmp_path / "_manifest"), "r", [row(
        "big.png", image_uri=str(image), mask_uri=str(mask), output_uri=str(image),
        width=512, height=512)])
    report.build(str(tmp_path / "_manifest"), str(tmp_path / "_report"))
    thumbs = sorted((tmp_path / "_report" / "thumbs").iterdir())
    assert [Image.open(t).size for t in thumbs] == [(256, 256)] * 3


def test_other_run_on_request_and_clear_errors(two_runs):
    html = Path(report.build(two_runs["uri"], str(two_runs["report"]), run_id="run-old")
                ).read_text()
    assert 'data-count="total">1<' in html and "run <code>run-old</code>" in html
    with pytest.raises(report.ReportError, match="run 'nope' is not in .* run-new"):
        report.build(two_runs["uri"], str(two_runs["report"]), run_id="nope")
    with pytest.raises(report.ReportError, match="no manifest rows"):
        report.build(str(two_runs["root"] / "nothing"), str(two_runs["report"]))


def test_an_unreadable_output_is_reported_not_fatal(two_runs):
    Path(two_runs["root"] / "out" / "a" / "cat.jpg").write_bytes(b"not an image")
    html = Path(report.build(two_runs["uri"], str(two_runs["report"]))).read_text()
    assert "thumbnail unavailable: ImageDecodeError" in html
    assert html.count('<img class="restored"') == 1


def test_sample_takes_largest_holes_and_slowest_then_random():
    count = 300
    rng = np.random.default_rng(0)
    rows = pa.table({
        "item_id": [f"i{n}" for n in range(count)],
        "status": ["ok"] * (count - 1) + ["failed"],
        "hole_fraction": rng.uniform(0, 0.3, count),
        "seconds": rng.uniform(0, 1, count),
        "width": [100] * count, "height": [100] * count,
    })
    holes = rows["hole_fraction"].to_numpy()
    seconds = rows["seconds"].to_numpy()
    picks = report.choose_sample(rows, 9, seed="run")
    assert len(picks) == 9
    for n in np.argsort(-holes[:-1])[:3]:
        assert "largest hole" in picks[f"i{n}"]
    for n in np.argsort(-seconds[:-1])[:3]:
        assert "slowest" in picks[f"i{n}"]
    assert f"i{count - 1}" not in picks  # failed items have no output to show
    assert report.choose_sample(rows, 9, seed="run") == picks
    assert report.choose_sample(rows, 0, seed="run") == {}


@pytest.mark.parametrize(("manifest_uri", "expected"), [
    ("out/_manifest", "out/_report"),
    ("/data/out/_manifest/", "/data/out/_report"),
    ("s3://bucket/out/_manifest", "s3://bucket/out/_report"),
    ("_manifest", "_report"),
])
def test_default_out_is_the_manifests_sibling(manifest_uri, expected):
    assert report.default_out(manifest_uri) == expected


def test_cli_report_writes_beside_the_manifest(two_runs):
    runner = CliRunner()
    result = runner.invoke(app, ["report", two_runs["uri"], "--sample", "1"])
    assert result.exit_code == 0, result.output
    assert str(two_runs["report"] / "index.html") in result.output
    html = (two_runs["report"] / "index.html").read_text()
    assert html.count('<img class="restored"') == 1
    result = runner.invoke(app, ["report", two_runs["uri"], "--run", "nope"])
    assert result.exit_code == 2
    assert "not in" in result.output


def test_report_from_and_to_s3_holds_no_secrets(two_runs, s3):
    """Manifest, photos and report all in a bucket (credentials set in the environment);
    `inpaint report s3://…` writes the report beside the manifest, with no secret in it."""
    fs, local = s3.filesystem(), two_runs["root"]
    for folder in ("images", "masks", "out"):
        fs.put(str(local / folder), f"{s3.bucket}/{folder}", recursive=True)
    table = manifest.read(two_runs["uri"])
    rows = []
    for entry in table.filter(pa.compute.equal(table["run_id"], "run-new")).to_pylist():
        for key in ("image_uri", "mask_uri", "output_uri"):
            if entry[key]:
                entry[key] = s3.uri(str(Path(entry[key]).relative_to(local)))
        rows.append(entry)
    write_run(s3.uri("archive/_manifest"), "run-new", rows)
    result = CliRunner().invoke(app, ["report", s3.uri("archive/_manifest")])
    assert result.exit_code == 0, result.output
    assert s3.uri("archive/_report/index.html") in result.output
    html = fs.cat_file(f"{s3.bucket}/archive/_report/index.html").decode()
    assert 'data-count="ok">2<' in html
    assert f'href="../../out/{quote(HOSTILE)}"' in html
    written = fs.find(f"{s3.bucket}/archive/_report")
    assert len([name for name in written if "/thumbs/" in name]) == 6
    for name in written:
        content = fs.cat_file(name)
        for secret in s3.secrets:
            assert secret.encode() not in content, name


@pytest.mark.slow
def test_scale_benchmark_runs_on_a_small_manifest(tmp_path):
    root = Path(__file__).resolve().parent.parent
    results = tmp_path / "scale.json"
    subprocess.run([sys.executable, str(root / "benchmarks" / "report_scale.py"), "--rows",
                    "2000", "--results", str(results)], check=True, cwd=root, timeout=300)
    (figures,) = json.loads(results.read_text())["results"]
    assert figures["rows"] == 2000 and figures["seconds"] > 0 and figures["peak_rss_mb"] > 0


@pytest.mark.slow
@pytest.mark.browser
def test_report_of_a_real_run_in_chromium(archive, local_ray):
    """A real `inpaint run` (local Ray, telea) with a broken photo and a hostile file
    name; its report renders in headless Chromium with every image loaded."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    images, masks, out = archive["images"], archive["masks"], archive["out"]
    (images / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    save_mask(synthetic_mask("strokes", 64, 64, seed=3), masks / "broken.png")
    photo = small_photo("coffee", 80)
    save(photo, images / HOSTILE, quality=90)
    save_mask(synthetic_mask("strokes", *photo.shape[:2], seed=4),
              (masks / HOSTILE).with_suffix(".png"))
    result = CliRunner().invoke(app, ["run", str(images), "--masks", str(masks), "--out",
                                      str(out), "--method", "telea"])
    assert result.exit_code == 1, result.output  # one item failed
    index = out / "_report" / "index.html"
    assert index.exists()
    table = manifest.read(str(out / "_manifest"))
    expected = {status: table["status"].to_pylist().count(status)
                for status in ("ok", "skipped", "failed")}
    assert expected == {"ok": 4, "skipped": 0, "failed": 1}

    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        page = browser.new_page()
        problems, requests = [], []
        page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(index.as_uri())
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all(
            ".gallery img, .charts img", "images => images.map(i => i.complete && i.naturalWidth)")
        counts = {s: page.inner_text(f'[data-count="{s}"]') for s in expected}
        names = page.eval_on_selector_all(".gallery .path",
                                          "nodes => nodes.map(n => n.textContent)")
        injected = page.evaluate("document.querySelectorAll('img[src=x]').length")
        failed_text = page.inner_text("#failed")
        page.uncheck("#show-outline")
        outline_hidden = page.eval_on_selector(".gallery img.outline",
                                               "i => getComputedStyle(i).display") == "none"
        browser.close()
    assert problems == []
    assert len(widths) == 4 * 3 + 2 and all(w and w > 0 for w in widths)
    assert counts == {status: str(n) for status, n in expected.items()}
    assert HOSTILE in names and injected == 0
    assert "broken.jpg" in failed_text and "decode" in failed_text
    assert outline_hidden
    assert all(url.startswith("file://") for url in requests), requests


@pytest.mark.slow
def test_a_run_that_resume_skips_entirely_writes_no_report(archive, local_ray):
    # What the README says: a run writes its report when it records at least one item.
    arguments = ["run", str(archive["images"]), "--masks", str(archive["masks"]), "--out",
                 str(archive["out"]), "--method", "telea"]
    assert CliRunner().invoke(app, arguments).exit_code == 0
    report = archive["out"] / "_report"
    assert (report / "index.html").exists()
    shutil.rmtree(report)
    result = CliRunner().invoke(app, arguments)  # every item is done: resume skips all
    assert result.exit_code == 0, result.output
    assert not report.exists()
