"""The photos the benchmarks and the detector's training use: every one that ships offline
with the project's dependencies (scikit-image, matplotlib; scikit-learn, PyWavelets and
mahotas with `pip install .[train]`), read as 8-bit RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import cbook
from PIL import Image
from skimage import data

# A crowd drawn in tiny figures (every speck is picture), fluorescent nuclei on black (bright
# blobs, like stars), a face.
MAHOTAS_PHOTOS = {"department_store": "DepartmentStore.jpg", "nuclear": "nuclear.png",
                  "luispedro": "luispedro.jpg"}


def load_photo(name: str) -> np.ndarray:
    """A photo as 8-bit RGB from a package that ships it: scikit-image by name, else
    matplotlib, scikit-learn, PyWavelets or mahotas (`pip install .[train]`)."""
    if name == "grace_hopper":
        with cbook.get_sample_data("grace_hopper.jpg") as stream:
            pixels = np.asarray(Image.open(stream).convert("RGB"))
    elif name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        pixels = load_sample_image(f"{name}.jpg")
    elif name in ("aero", "ascent"):
        import pywt.data

        pixels = getattr(pywt.data, name)().astype(np.uint8)
    elif name in MAHOTAS_PHOTOS:
        import mahotas.demos

        path = Path(mahotas.demos.__file__).parent / "data" / MAHOTAS_PHOTOS[name]
        pixels = np.asarray(Image.open(path).convert("RGB"))
    else:
        pixels = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    return pixels[..., :3] if pixels.ndim == 3 else np.dstack([pixels] * 3)
