"""Rebuild the sample archive in examples/ from photos that ship with scikit-image.

Each photo is public domain or CC0 (see examples/README.md); masks are seeded synthetic
damage drawn by `pipeline.masks.synthetic_mask`, so this script is reproducible.
Run: python examples/make_examples.py
"""

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from pipeline.masks import synthetic_mask

HERE = Path(__file__).parent
# (relative path, scikit-image loader, mask kind, seed)
SAMPLES = [
    ("cats/chelsea.jpg", data.chelsea, "strokes", 1),
    ("coffee.png", data.coffee, "scratch", 2),
    ("launch/rocket.jpg", data.rocket, "strokes", 3),
    ("people/astronaut.png", data.astronaut, "blob", 4),
    ("camera.png", data.camera, "scratch", 5),
]


def main() -> None:
    for relative, loader, kind, seed in SAMPLES:
        photo = np.asarray(loader())
        image_path = HERE / "images" / relative
        mask_path = (HERE / "masks" / relative).with_suffix(".png")
        image_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        options = {"quality": 90} if image_path.suffix == ".jpg" else {"optimize": True}
        Image.fromarray(photo).save(image_path, **options)
        hole = synthetic_mask(kind, photo.shape[0], photo.shape[1], seed=seed)
        Image.fromarray(hole.astype(np.uint8) * 255).save(mask_path, optimize=True)
        print(f"{relative}: {photo.shape}, {kind} mask, {hole.mean():.1%} hole")


if __name__ == "__main__":
    main()
