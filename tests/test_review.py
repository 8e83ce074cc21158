"""`inpaint review`: the review server over a real `--masks auto` run, its safety, the edits
it replays on the full-size mask, and the rerun that redoes exactly the saved photos."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import shutil
import socket
import threading
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline import manifest, runner
from pipeline.cli import app
from pipeline.damage import add_damage
from pipeline.methods import inpaint
from pipeline.review import ReviewError, apply_edits, entries, serve
from pipeline.review.items import hand_mask_uri, regions_of
from pipeline.settings import RunSettings
from tests.conftest import save, save_mask, small_photo

HOSTILE = "<img src=x onerror=alert(1)> & co.png"


def read_mask(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 127


def damaged_prints(images: Path) -> dict[str, np.ndarray]:
    """Two damaged prints the learned detector finds regions in (one with a hostile name)."""
    prints = {"box/cat.png": add_damage(small_photo("chelsea", 192), seed=3).image,
              HOSTILE: add_damage(small_photo("coffee", 160), seed=4).image}
    for relative, pixels in prints.items():
        save(pixels, images / relative)
    return prints


def auto_settings(root: Path, **fields) -> RunSettings:
    return RunSettings(images=str(root / "images"), out=str(root / "out"), masks="auto",
                       method="telea", report=False, **fields)


@pytest.fixture
def run(tmp_path) -> dict:
    """A real `--masks auto` run's outputs and manifest, done in this process (the rows the
    Ray run would record, written by the manifest writer), so these tests need no Ray."""
    prints = damaged_prints(tmp_path / "images")
    settings = auto_settings(tmp_path)
    rows = runner.restore_items(settings)
    assert {row["status"] for row in rows} == {"ok"}, rows
    writer = manifest.ManifestWriter(settings.manifest_uri(), "run-1")
    writer.add(rows)
    writer.flush()
    return {"root": tmp_path, "out": tmp_path / "out", "hand": tmp_path / "hand",
            "prints": prints, "rows": {row["relative_path"]: row for row in rows}}


@pytest.fixture
def server(run):
    review = serve(str(run["out"]), str(run["hand"]))
    thread = threading.Thread(target=review.serve_forever, daemon=True)
    thread.start()
    yield review
    review.shutdown()
    review.server_close()


def request(server, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None, host: str | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    sent = {"Host": host or f"127.0.0.1:{server.server_address[1]}"} | (headers or {})
    connection.request(method, path, body, sent)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def token_header(server) -> dict:
    return {"X-Review-Token": server.token}


def item_id(run, relative: str) -> str:
    return run["rows"][relative]["item_id"]


def post_edits(server, item: str, edits, headers=None):
    body = json.dumps({"edits": edits}).encode()
    return request(server, "POST", f"/api/items/{item}/mask", body,
                   {"Content-Type": "application/json"}
                   | (token_header(server) if headers is None else headers))


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


# ---- safety ----------------------------------------------------------------------------

def test_the_token_is_required_for_every_page_and_call(server, run):
    cat = item_id(run, "box/cat.png")
    paths = ["/", "/api/items", f"/api/items/{cat}", f"/api/items/{cat}/photo",
             f"/api/items/{cat}/labels"]
    for path in paths:
        assert request(server, "GET", path)[0] == 403, path
        assert request(server, "GET", path, headers={"X-Review-Token": "wrong"})[0] == 403
        wrong = server.token[:-1] + ("x" if server.token[-1] != "x" else "y")
        assert request(server, "GET", f"{path}?token={wrong}")[0] == 403
        assert request(server, "GET", path, headers=token_header(server))[0] == 200, path
    status, page = request(server, "GET", "/?token=" + server.token)
    assert status == 200 and b"review.js" in page
    # A save takes the header only: a cross-site form can put the token in no header.
    assert post_edits(server, cat, [], headers={})[0] == 403
    status, _ = request(server, "POST", f"/api/items/{cat}/mask?token={server.token}",
                        b'{"edits": []}', {"Content-Type": "application/json"})
    assert status == 403
    assert not run["hand"].exists()
    # The page's own script and style hold no data and load without it.
    assert request(server, "GET", "/static/review.js")[0] == 200


def test_the_server_is_not_reachable_off_loopback(server):
    assert server.server_address[0] == "127.0.0.1"
    port = server.server_address[1]
    others = [address.address for addresses in psutil.net_if_addrs().values()
              for address in addresses
              if address.family == socket.AF_INET and not address.address.startswith("127.")]
    if not others:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    for address in others:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, port), timeout=5).close()
    # A page of another site that resolves its own name to 127.0.0.1 (DNS rebinding)
    # still sends its own Host: refused.
    status, _ = request(server, "GET", "/api/items", headers=token_header(server),
                        host=f"evil.example:{port}")
    assert status == 403


def test_traversal_attempts_are_refused_and_write_nothing(server, run, tmp_path):
    before = files_under(tmp_path)
    for path in ("/api/items/../../escape/mask", "/api/items/..%2F..%2Fescape/mask",
                 "/static/../items.py", "/static/%2e%2e/server.py"):
        status, _ = request(server, "POST" if path.endswith("mask") else "GET", path,
                            b'{"edits": []}', {"Content-Type": "application/json"}
                            | token_header(server))
        assert status == 404, path
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("relative", ["../escape.png", "a/../../escape.png", "/etc/escape.png",
                                      "..", "a::s3://bucket/escape.png", "..\\escape.png"])
def test_a_manifest_path_that_climbs_out_of_the_hand_masks_folder_is_refused(relative, tmp_path):
    with pytest.raises(ReviewError, match="leaves the hand-masks folder"):
        hand_mask_uri(str(tmp_path / "hand"), relative)
    hand = tmp_path / "hand"
    assert hand_mask_uri(str(hand), "a/./b/x.jpg") == str(hand / "a/b/x.png")
    assert hand_mask_uri(str(hand), "12:30 scan.tif") == str(hand / "12:30 scan.png")


def test_a_crafted_manifest_row_cannot_save_outside_the_folder(run, tmp_path):
    row = run["rows"]["box/cat.png"] | {"item_id": "f" * 20, "relative_path": "../../escape.png"}
    writer = manifest.ManifestWriter(str(run["out"] / "_manifest"), "run-crafted")
    writer.add([row])
    writer.flush()
    review = serve(str(run["out"]), str(run["hand"]))
    thread = threading.Thread(target=review.serve_forever, daemon=True)
    thread.start()
    try:
        before = files_under(tmp_path.parent)
        status, body = post_edits(review, "f" * 20, [])
    finally:
        review.shutdown()
        review.server_close()
    assert status == 400 and b"leaves the hand-masks folder" in body
    assert files_under(tmp_path.parent) == before


def test_names_are_data_not_markup(server, run):
    status, body = request(server, "GET", "/api/items", headers=token_header(server))
    listing = json.loads(body)
    assert HOSTILE in [item["path"] for item in listing["items"]]
    script = (Path(__file__).parents[1] / "pipeline/review/static/review.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    _, page = request(server, "GET", "/?token=" + server.token)
    assert b"<script>" not in page  # no inline script: the CSP forbids them anyway


# ---- listing, views, edits ----------------------------------------------------------------

def test_photos_are_listed_most_doubtful_first_latest_row_each(run):
    listed = entries(str(run["out"] / "_manifest"))
    shares = [entry.damage_fraction for entry in listed]
    assert shares == sorted(shares, reverse=True) and len(listed) == 2
    cat = run["rows"]["box/cat.png"]
    newer = [cat | {"status": "failed", "finished_at": None},
             run["rows"][HOSTILE] | {"damage_fraction": 0.9, "hole_fraction": 0.9,
                                     "finished_at": run["rows"][HOSTILE]["finished_at"]
                                     + timedelta(seconds=5)}]
    writer = manifest.ManifestWriter(str(run["out"] / "_manifest"), "run-2")
    writer.add(newer)
    writer.flush()
    listed = entries(str(run["out"] / "_manifest"))
    assert [entry.relative_path for entry in listed] == [HOSTILE, "box/cat.png"]
    assert listed[0].damage_fraction == 0.9
    # A reviewed mask needs less of a look than any mask nobody checked.
    writer = manifest.ManifestWriter(str(run["out"] / "_manifest"), "run-3")
    later = run["rows"][HOSTILE]["finished_at"] + timedelta(seconds=10)
    writer.add([run["rows"][HOSTILE] | {"mask_reviewed": True, "damage_fraction": None,
                                         "hole_fraction": 0.95, "finished_at": later}])
    writer.flush()
    listed = entries(str(run["out"] / "_manifest"))
    assert [(e.relative_path, e.reviewed) for e in listed] == [("box/cat.png", False),
                                                               (HOSTILE, True)]


def test_a_view_is_downscaled_with_its_region_labels(server, run, monkeypatch):
    from pipeline.review import items

    monkeypatch.setattr(items, "VIEW_SIDE", 64)
    cat = item_id(run, "box/cat.png")
    status, body = request(server, "GET", f"/api/items/{cat}", headers=token_header(server))
    meta = json.loads(body)
    assert status == 200 and (meta["view_width"], meta["view_height"]) == (64, 43)
    count, _ = regions_of(read_mask(run["rows"]["box/cat.png"]["mask_uri"]))
    assert meta["regions"] == count >= 2 and meta["source"] == "detected"
    for part in ("photo", "output"):
        _, data = request(server, "GET", f"/api/items/{cat}/{part}", headers=token_header(server))
        assert Image.open(io.BytesIO(data)).size == (64, 43)
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
    connection.request("GET", f"/api/items/{cat}/labels", headers=token_header(server)
                       | {"Host": f"127.0.0.1:{server.server_address[1]}"})
    response = connection.getresponse()
    assert response.getheader("Content-Encoding") == "gzip"
    labels = np.frombuffer(gzip.decompress(response.read()), "<i4")
    assert labels.size == 64 * 43 and labels.max() <= count and labels.any()


def test_one_pixel_regions_survive_the_downscale():
    from pipeline.review.items import _view_labels

    mask = np.zeros((300, 400), bool)
    mask[10, 10] = True                 # a speck
    mask[100:280, 200] = True           # a 1-px scratch
    _, labels = regions_of(mask)
    small = np.frombuffer(gzip.decompress(_view_labels(labels, 0.25, (100, 75))), "<i4")
    small = small.reshape(75, 100)
    assert set(np.unique(small)) == {0, 1, 2}
    assert (small == 2).sum() >= 44     # the scratch stays unbroken: 180 px / 4


@pytest.mark.parametrize("orientation", [1, 6, 3])
def test_a_jpeg_view_is_decoded_small_and_shown_upright(tmp_path, orientation):
    """A big JPEG's view is decoded at reduced scale (draft); it must match the full decode
    as displayed (EXIF orientation applied), as the mask does."""
    from pipeline import imageio
    from pipeline.review.items import Entry, _view_pixels

    stored = small_photo("astronaut", 512)[:, :384]
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(stored, tmp_path / "scan.jpg", quality=95, exif=exif.tobytes())
    data = path.read_bytes()
    shown = imageio.decode(data, 10**8).pixels
    entry = Entry("a" * 20, "scan.jpg", str(path), str(path), str(path), shown.shape[1],
                  shown.shape[0], None, None, None, False, False, 10**8)
    size = (shown.shape[1] // 4, shown.shape[0] // 4)
    small = _view_pixels(data, size, entry, str(path))
    assert small.shape[0] < shown.shape[0] and small.shape[:2] == (size[1], size[0])
    expected = cv2.resize(shown, size, interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(small.astype(int) - expected).mean() < 6


def test_edits_replay_in_order_on_the_full_size_mask():
    mask = np.zeros((40, 60), bool)
    mask[5:8, 5:30] = True          # region 1, a scratch
    mask[20, 40] = True             # region 2, one speck
    count, labels = regions_of(mask)
    assert count == 2
    assert not apply_edits(mask, [{"op": "reject", "region": 1}])[5:8, 5:30].any()
    back = apply_edits(mask, [{"op": "reject", "region": 1}, {"op": "accept", "region": 1}])
    assert (back == mask).all()
    line = [[10.5, 30.5], [50.5, 30.5]]
    painted = apply_edits(mask, [{"op": "paint", "size": 5, "points": line}])
    added = painted & ~mask
    # Pixels whose centre is within 2.5 px of the line: 5 rows, and round caps.
    assert added[28:33, 10:51].all() and added.sum() == 5 * 41 + 2 * 8
    assert not added[:28].any() and not added[33:].any()
    erased = apply_edits(mask, [{"op": "erase", "size": 3, "points": [[20.5, 6.5]]}])
    assert (mask & ~erased).sum() == 9 and not erased[5:8, 19:22].any()
    # A region is the detected one: painting over it, then rejecting it, leaves none of it.
    both = apply_edits(mask, [{"op": "paint", "size": 3, "points": [[40.5, 20.5]]},
                              {"op": "reject", "region": 2}])
    assert not both[20, 40] and both[19, 40]


@pytest.mark.parametrize("edits, message", [
    ([{"op": "fill"}], "unknown edit"),
    ([{"op": "reject", "region": 9}], "no region 9"),
    ([{"op": "reject", "region": True}], "no region"),
    ([{"op": "paint", "size": 4, "points": [[1, "a"]]}], "needs points"),
    ([{"op": "paint", "size": float("nan"), "points": [[1, 1]]}], "brush size"),
    ([{"op": "erase", "size": 4, "points": []}], "needs points"),
    ({"op": "reject"}, "must be a list"),
])
def test_bad_edits_are_refused_in_words(edits, message):
    mask = np.zeros((10, 10), bool)
    mask[2, 2] = True
    with pytest.raises(ReviewError, match=message):
        apply_edits(mask, edits)


def test_a_saved_mask_is_marked_reviewed_and_only_its_photo_is_redone(server, run):
    cat = item_id(run, "box/cat.png")
    detected = read_mask(run["rows"]["box/cat.png"]["mask_uri"])
    status, body = post_edits(server, cat, [{"op": "reject", "region": 1}])
    assert status == 200, body
    saved = Path(json.loads(body)["saved"])
    assert saved == run["hand"] / "box" / "cat.png"
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # atomic write
    _, labels = regions_of(detected)
    assert (read_mask(saved) == (detected & (labels != 1))).all()
    assert "inpaint-reviewed" in Image.open(saved).info
    # Reopened, the photo starts from the saved mask.
    _, meta = request(server, "GET", f"/api/items/{cat}", headers=token_header(server))
    assert json.loads(meta)["source"] == "saved" and json.loads(meta)["saved"] is True
    # Resume: only the photo with a new hand mask is to do, though the first run had none.
    work = runner.plan(auto_settings(run["root"], hand_masks=str(run["hand"])))
    assert [item.relative_path for item in work.todo] == ["box/cat.png"]
    [row] = runner.restore_items(auto_settings(run["root"], hand_masks=str(run["hand"])))
    assert row["mask_uri"] == str(saved) and row["mask_reviewed"] is True
    assert run["rows"][HOSTILE]["mask_reviewed"] is False


def test_runs_recorded_before_review_resume_as_they_did(run):
    """Parts written before this change have `hand_masks` in params and no mask_reviewed
    column: they still read, and resume still skips their photos."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = run["out"] / "_manifest"
    for part in folder.iterdir():
        table = pq.read_table(part).drop_columns(["mask_reviewed"])
        params = [json.dumps(json.loads(p) | {"hand_masks": None}, sort_keys=True,
                             separators=(",", ":")) for p in table["params"].to_pylist()]
        table = table.set_column(table.schema.get_field_index("params"), "params",
                                 pa.array(params))
        pq.write_table(table, part)
    assert manifest.read(str(folder))["mask_reviewed"].null_count == 2
    assert runner.plan(auto_settings(run["root"])).todo == []
    assert len(entries(str(folder))) == 2


def test_the_hand_mask_of_another_extension_would_win_so_save_refuses(server, run):
    save_mask(np.zeros((128, 192), bool), run["hand"] / "box" / "cat.jpg")
    status, body = post_edits(server, item_id(run, "box/cat.png"), [])
    assert status == 400 and b"cat.jpg is already a hand mask" in body
    assert not (run["hand"] / "box" / "cat.png").exists()


def test_review_reads_and_saves_in_a_bucket(run, s3):
    """Outputs, detected masks and manifest in a bucket (a loopback S3 server); the
    corrected mask is saved to a bucket prefix, and the folder listing sees it."""
    fs, local = s3.filesystem(), run["root"]
    for folder in ("images", "out"):
        fs.put(str(local / folder), f"{s3.bucket}/{folder}", recursive=True)
    rows = []
    for row in manifest.read(str(run["out"] / "_manifest")).to_pylist():
        for key in ("image_uri", "mask_uri", "output_uri"):
            row[key] = s3.uri(str(Path(row[key]).relative_to(local)))
        rows.append(row)
    writer = manifest.ManifestWriter(s3.uri("out/_manifest"), "run-1")
    writer.add(rows)
    writer.flush()
    review = serve(s3.uri("out"), s3.uri("checked"))
    thread = threading.Thread(target=review.serve_forever, daemon=True)
    thread.start()
    try:
        cat = item_id(run, "box/cat.png")
        status, body = post_edits(review, cat, [{"op": "reject", "region": 1}])
        listing = json.loads(request(review, "GET", "/api/items",
                                     headers=token_header(review))[1])
    finally:
        review.shutdown()
        review.server_close()
    assert status == 200, body
    assert json.loads(body)["saved"] == s3.uri("checked/box/cat.png")
    detected = read_mask(run["rows"]["box/cat.png"]["mask_uri"])
    _, labels = regions_of(detected)
    saved = np.asarray(Image.open(io.BytesIO(fs.cat_file(f"{s3.bucket}/checked/box/cat.png"))))
    assert ((saved > 127) == (detected & (labels != 1))).all()
    assert {item["path"]: item["saved"] for item in listing["items"]} == {
        "box/cat.png": True, HOSTILE: False}


def test_review_command_says_when_there_is_nothing_to_review(tmp_path):
    result = CliRunner().invoke(app, ["review", str(tmp_path), "--hand-masks",
                                      str(tmp_path / "hand")])
    assert result.exit_code == 2 and "nothing to review" in result.output


# ---- in the browser, then the rerun ----------------------------------------------------

def stroke_band(shape, start, end, radius: float) -> np.ndarray:
    """Pixels whose centre lies within `radius` of the segment start-end (photo pixels)."""
    ys, xs = np.mgrid[: shape[0], : shape[1]] + 0.5
    a, b = np.array(start, float), np.array(end, float)
    t = np.clip(((xs - a[0]) * (b - a)[0] + (ys - a[1]) * (b - a)[1]) / np.sum((b - a) ** 2), 0, 1)
    return np.hypot(xs - (a[0] + t * (b - a)[0]), ys - (a[1] + t * (b - a)[1])) <= radius


def clear_segment(detected: np.ndarray, length: int, margin: int) -> tuple:
    """A horizontal segment `margin` px away from every detected pixel: the 'missed' damage."""
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    taken = cv2.dilate(detected.astype(np.uint8), kernel) > 0
    height, width = detected.shape
    for y in range(margin, height - margin):
        for x in range(margin, width - margin - length):
            if not taken[y, x: x + length + 1].any():
                return (x + 0.5, y + 0.5), (x + length + 0.5, y + 0.5)
    raise AssertionError("no clear place for the stroke")


@pytest.mark.slow
@pytest.mark.browser
def test_reject_paint_save_in_chromium_then_rerun_restores_only_that_photo(tmp_path,
                                                                         local_ray):
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    prints = damaged_prints(tmp_path / "images")
    images, out, hand = tmp_path / "images", tmp_path / "out", tmp_path / "hand"
    command = ["run", str(images), "--out", str(out), "--masks", "auto", "--method", "telea",
               "--no-report"]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    rows = {r["relative_path"]: r for r in manifest.read(str(out / "_manifest")).to_pylist()}
    cat = rows["box/cat.png"]
    detected = read_mask(cat["mask_uri"])
    count, labels = regions_of(detected)
    assert count >= 2
    first_output = np.asarray(Image.open(cat["output_uri"]))
    # Reject the largest region; paint a stroke of 5 px where nothing was found.
    rejected = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    ys, xs = np.nonzero(labels == rejected)
    pick = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    target = (xs[pick] + 0.5, ys[pick] + 0.5)
    start, end = clear_segment(detected, 40, 8)

    review = serve(str(out), str(hand))
    thread = threading.Thread(target=review.serve_forever, daemon=True)
    thread.start()
    try:
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            problems, posted, requests = [], [], []
            page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda r: requests.append(r.url))
            page.on("request", lambda r: r.method == "POST" and posted.append(r.post_data_json))
            page.goto(review.url)
            page.wait_for_selector("body[data-ready]:not([data-ready=''])")
            names = page.eval_on_selector_all("#items .path", "n => n.map(e => e.textContent)")
            injected = page.evaluate("document.querySelectorAll('img[src=x]').length")
            page.click(f"#items button[data-id='{cat['item_id']}']")
            page.wait_for_selector(f"body[data-ready='{cat['item_id']}']")
            box = page.locator("#overlay").bounding_box()

            def screen(point):
                return (box["x"] + point[0] * box["width"] / detected.shape[1],
                        box["y"] + point[1] * box["height"] / detected.shape[0])

            page.mouse.click(*screen(target))
            page.click("[data-tool=paint]")
            page.eval_on_selector("#brush", "b => { b.value = '5'; "
                                            "b.dispatchEvent(new Event('input')); }")
            page.mouse.move(*screen(start))
            page.mouse.down()
            page.mouse.move(*screen(end), steps=12)
            page.mouse.up()
            # An erase stroke, undone (Ctrl+Z): it must not reach the saved mask.
            page.click("[data-tool=erase]")
            page.mouse.move(*screen(target))
            page.mouse.down()
            page.mouse.move(*screen((target[0] + 6, target[1])), steps=3)
            page.mouse.up()
            page.keyboard.press("Control+z")
            # The wheel zooms both panes; Fit puts the photo back.
            page.mouse.move(*screen((detected.shape[1] / 2, detected.shape[0] / 2)))
            page.mouse.wheel(0, -500)
            zoomed = page.locator("#overlay").bounding_box()["width"] / box["width"]
            result_zoomed = page.locator("#result").bounding_box()["width"] / box["width"]
            page.click("#fit")
            page.click("#toggle")
            before_caption = page.inner_text("#result-caption")
            page.click("#save")
            page.wait_for_selector(f"body[data-saved='{cat['item_id']}']")
            status = page.inner_text("#status")
            browser.close()
    finally:
        review.shutdown()
        review.server_close()
    assert problems == [], problems
    assert HOSTILE in names and injected == 0
    assert before_caption == "photo (before)" and "saved" in status
    assert zoomed > 1.5 and result_zoomed == pytest.approx(zoomed)
    origin = review.url.split("?")[0]
    assert all(url.startswith((origin, "blob:" + origin)) for url in requests), requests
    [body] = posted
    assert [e["op"] for e in body["edits"]] == ["reject", "paint"]
    assert body["edits"][0]["region"] == rejected and body["edits"][1]["size"] == 5

    # The saved mask has exactly those changes: the rejected region gone, the stroke added.
    saved = read_mask(hand / "box" / "cat.png")
    assert ((detected & ~saved) == (labels == rejected)).all()
    added = saved & ~detected
    assert not (added & ~stroke_band(saved.shape, start, end, 2.5 + 1.5)).any()
    assert stroke_band(saved.shape, start, end, 2.5 - 1.0)[~added].sum() == 0
    assert not (tmp_path / "hand" / HOSTILE).exists()

    # The rerun restores that photo alone, from the saved mask, and says it was reviewed.
    again = CliRunner().invoke(app, [*command, "--hand-masks", str(hand)])
    assert again.exit_code == 0, again.output
    assert "1 ok; 1 already done" in again.output
    table = manifest.read(str(out / "_manifest")).to_pylist()
    latest_run = max(table, key=lambda r: r["finished_at"])["run_id"]
    [row] = [r for r in table if r["run_id"] == latest_run]
    assert row["relative_path"] == "box/cat.png" and row["mask_reviewed"] is True
    photo = prints["box/cat.png"]
    restored = np.asarray(Image.open(row["output_uri"]))
    assert (restored == inpaint(photo, saved, method="telea")).all()
    region = labels == rejected
    assert (restored[region] == photo[region]).all()           # rejected: left as it was
    assert (first_output[region] != photo[region]).any()       # ...where the first run filled
    painted = added
    assert (restored[painted] != first_output[painted]).any()  # painted: filled now
    assert (first_output[painted] == photo[painted]).all()
