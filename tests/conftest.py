"""Shared fixtures: a small real archive built on the fly from scikit-image's photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from pipeline.masks import synthetic_mask
from tests.s3server import s3, s3_server  # noqa: F401  (fixtures: a loopback S3 server)


def save(array: np.ndarray, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def save_mask(mask: np.ndarray, path: Path) -> Path:
    return save(mask.astype(np.uint8) * 255, path)


def small_photo(name: str = "chelsea", size: int = 96) -> np.ndarray:
    """A real photo, shrunk so tests stay fast."""
    photo = Image.fromarray(getattr(data, name)())
    photo.thumbnail((size, size))
    return np.asarray(photo)


@pytest.fixture
def archive(tmp_path: Path) -> dict[str, Path]:
    """images/ and masks/ with three photos in nested folders, each with a strokes mask."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    for index, (relative, name) in enumerate(
        [("a/chelsea.jpg", "chelsea"), ("a/b/coffee.png", "coffee"), ("rocket.png", "rocket")]
    ):
        photo = small_photo(name)
        save(photo, images / relative, **({"quality": 92} if relative.endswith("jpg") else {}))
        hole = synthetic_mask("strokes", photo.shape[0], photo.shape[1], seed=index)
        save_mask(hole, (masks / relative).with_suffix(".png"))
    return {"root": tmp_path, "images": images, "masks": masks, "out": tmp_path / "out"}


@pytest.fixture(scope="session")
def local_ray():
    """One real local Ray for the session; `pipeline.run` reuses a Ray that is running. Its
    workers hold the loopback S3 server's fake credentials (a worker's environment is fixed
    when Ray starts), so a test can run on it against a bucket by giving the endpoint as a
    storage option (`S3.endpoint_option`); without one, nothing of it reaches the server."""
    import ray

    from pipeline import localray
    from pipeline.runner import _quiet_ray_logs
    from tests.s3server import credentials_in_environment

    _quiet_ray_logs()
    with credentials_in_environment():
        localray.start(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    localray.stop()


@pytest.fixture
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on shared cores OpenMP's spinning
    threads made a 50 ms optimisation take half a minute."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
