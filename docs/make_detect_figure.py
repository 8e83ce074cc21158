"""Rebuild the README's `--masks auto` figure: a damaged print, its detected mask, the result.

The print is scikit-image's chelsea with seeded synthetic damage; it goes through the same
work as `inpaint run prints/ --out out/ --masks auto` (`pipeline.restore_items`, in-process),
and the caption's figures are printed. Run: python docs/make_detect_figure.py
"""

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from pipeline import RunSettings, restore_items
from pipeline.damage import add_damage, mask_scores

IMAGES = Path(__file__).parent / "images"
SEED = 21


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / error))


def main() -> None:
    clean = data.chelsea()
    damage = add_damage(clean, seed=SEED)
    with tempfile.TemporaryDirectory() as folder:
        prints, out = Path(folder) / "prints", Path(folder) / "out"
        prints.mkdir()
        Image.fromarray(damage.image).save(prints / "chelsea.png")
        [row] = restore_items(RunSettings(images=str(prints), out=str(out), masks="auto"))
        assert row["status"] == "ok", row.get("error")
        restored = np.asarray(Image.open(row["output_uri"]).convert("RGB"))
        found = np.asarray(Image.open(row["mask_uri"])) > 0
    overlay = damage.image.copy()
    overlay[found] = (255, 0, 0)
    for name, pixels in (("before", damage.image), ("mask", overlay), ("after", restored)):
        Image.fromarray(pixels).save(IMAGES / f"detect-{name}.jpg", quality=90)
    scores = mask_scores(found, damage.mask)
    print(f"precision {scores['precision']:.2f}, recall {scores['recall']:.2f}, "
          f"F1 {scores['f1']:.2f}; PSNR {psnr(damage.image, clean):.1f} dB damaged -> "
          f"{psnr(restored, clean):.1f} dB restored; {row['defects']}")


if __name__ == "__main__":
    main()
