"""Rebuild the README's `inpaint review` screenshot (docs/images/review.png).

Three of the bundled example photos (examples/images) get seeded synthetic damage
(`pipeline.damage.add_damage`) and go through `inpaint run --masks auto --method telea` on a
local Ray; the review page of that run is opened in headless Chromium (Debian's
/usr/bin/chromium, driven by Playwright), the largest detected region of the coffee photo
that covers no true damage is rejected, a stroke is painted over a defect the detector
missed (both unsaved), and the page is captured. Run: python docs/make_review_figure.py
"""

import os
import tempfile
import threading
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

from pipeline import RunSettings, manifest, run
from pipeline.damage import add_damage
from pipeline.review import serve
from pipeline.review.items import regions_of

ROOT = Path(__file__).parents[1]
PHOTOS = {"cats/chelsea.png": "cats/chelsea.jpg", "coffee.png": "coffee.png",
          "launch/rocket.png": "launch/rocket.jpg"}
SEED = 21
# The photo the figure edits: on coffee the detector both flags what is not damage (the
# dark gap under the cup) and misses a defect, so both kinds of correction show.
FIGURE = "coffee.png"


def damaged_prints(folder: Path) -> dict[str, np.ndarray]:
    """The damaged prints, written under `folder`; returns their true damage masks."""
    truth = {}
    for index, (target, source) in enumerate(PHOTOS.items()):
        photo = np.asarray(Image.open(ROOT / "examples" / "images" / source).convert("RGB"))
        damage = add_damage(photo, seed=SEED + index)
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(damage.image).save(folder / target)
        truth[target] = damage.mask
    return truth


def false_flag(found: np.ndarray, true: np.ndarray) -> int:
    """The largest detected region that touches no true damage."""
    count, labels = regions_of(found)
    hits = np.bincount(labels[true], minlength=count + 1)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    false = [r for r in range(1, count + 1) if hits[r] == 0]
    if not false:
        raise SystemExit(f"{FIGURE}: every detected region is true damage; choose another seed")
    return max(false, key=lambda r: sizes[r])


def missed_stroke(found: np.ndarray, true: np.ndarray,
                  near: tuple[float, float]) -> list[tuple[float, float]]:
    """Points along the true defect of 12 px or more that the detector missed entirely and
    that lies nearest to `near`, in photo pixels: its pixels' means in eight bins along its
    main axis."""
    count, labels = regions_of(true)
    missed = [r for r in range(1, count + 1)
              if not found[labels == r].any() and (labels == r).sum() >= 12]

    def distance(region: int) -> float:
        ys, xs = np.nonzero(labels == region)
        return float(np.hypot(xs.mean() - near[0], ys.mean() - near[1]))

    ys, xs = np.nonzero(labels == min(missed, key=distance))
    points = np.stack([xs, ys], 1) + 0.5
    axis = np.linalg.svd(points - points.mean(0), full_matrices=False)[2][0]
    along = (points - points.mean(0)) @ axis
    bins = np.array_split(np.argsort(along), 8)
    return [tuple(points[b].mean(0)) for b in bins if len(b)]


def main() -> None:
    with tempfile.TemporaryDirectory() as temporary:
        os.chdir(temporary)  # the page shows the folders as given: short relative names
        truth = damaged_prints(Path("prints"))
        summary = run(RunSettings(images="prints", out="out", masks="auto", method="telea",
                                  report=False))
        print(f"run: {summary.counts}")
        rows = {r["relative_path"]: r for r in manifest.read("out/_manifest").to_pylist()}
        row = rows[FIGURE]
        found = np.asarray(Image.open(row["mask_uri"])) > 127
        region = false_flag(found, truth[FIGURE])
        _, labels = regions_of(found)
        ys, xs = np.nonzero(labels == region)
        pick = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
        stroke = missed_stroke(found, truth[FIGURE], (xs.mean(), ys.mean()))
        review = serve("out", "checked")
        threading.Thread(target=review.serve_forever, daemon=True).start()
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 620})
            page.goto(review.url)
            page.wait_for_selector("body[data-ready]:not([data-ready=''])")
            page.click(f"#items button[data-id='{row['item_id']}']")
            page.wait_for_selector(f"body[data-ready='{row['item_id']}']")
            box = page.locator("#overlay").bounding_box()
            height, width = found.shape

            def screen(x: float, y: float) -> tuple[float, float]:
                return box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height

            page.mouse.click(*screen(xs[pick] + 0.5, ys[pick] + 0.5))
            page.click("[data-tool=paint]")
            page.eval_on_selector("#brush", "b => { b.value = '4'; "
                                            "b.dispatchEvent(new Event('input')); }")
            page.mouse.move(*screen(*stroke[0]))
            page.mouse.down()
            for point in stroke[1:]:
                page.mouse.move(*screen(*point), steps=3)
            page.mouse.up()
            page.click("[data-tool=regions]")
            # Zoom in (1.6x, the wheel) between the two edits, so both show larger.
            middle = np.mean([stroke[len(stroke) // 2], (xs[pick], ys[pick])], axis=0)
            page.mouse.move(*screen(*middle))
            page.mouse.wheel(0, -313)
            page.wait_for_timeout(300)
            page.screenshot(path=str(ROOT / "docs" / "images" / "review.png"))
            browser.close()
        review.shutdown()
        os.chdir(ROOT)
        print(f"{FIGURE}: {labels.max()} regions detected; region {region} ({len(xs)} px, no true "
              f"damage under it) rejected; a stroke painted over a missed defect "
              f"(around x={stroke[len(stroke) // 2][0]:.0f}, y={stroke[len(stroke) // 2][1]:.0f})")


if __name__ == "__main__":
    main()
