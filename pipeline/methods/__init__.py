"""The registry of inpainting methods, imported lazily by name.

Adding a method is one small module with a `Method` subclass, plus one line in
`_REGISTRY`. Heavy imports (torch, models) happen only when a method is loaded, which
keeps every Ray worker that does not use them light.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from pipeline.methods.base import Method, NothingToConditionOn, Result

__all__ = ["Method", "NothingToConditionOn", "Result", "inpaint", "load_method", "method_names"]

_REGISTRY: dict[str, str] = {
    "telea": "pipeline.methods.opencv:Telea",
    "ns": "pipeline.methods.opencv:NavierStokes",
    "exemplar": "pipeline.methods.classical:Exemplar",
    "fsr": "pipeline.methods.classical:FSR",
    "biharmonic": "pipeline.methods.classical:Biharmonic",
    "patch": "pipeline.methods.patches:PatchSynthesis",
    "hallucinate": "pipeline.methods.hallucinate:Hallucinate",
    "tv": "pipeline.methods.hallucinate:TotalVariation",
}


class UnknownMethodError(ValueError):
    pass


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def method_class(name: str) -> type[Method]:
    if name not in _REGISTRY:
        raise UnknownMethodError(
            f"unknown method {name!r}; choose from {', '.join(method_names())}"
        )
    module_name, class_name = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def resolve_params(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate params against the method's own model and return them with defaults filled."""
    cls = method_class(name)
    return cls.Params(**(params or {})).model_dump(mode="json")


def load_method(
    name: str,
    params: dict[str, Any] | None = None,
    device: str = "cpu",
    seed: int = 0,
    weights: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Method:
    """Load a method by name; `seed` and `weights` (a prior network's URI, read with
    `storage_options`) are run settings."""
    cls = method_class(name)
    return cls(cls.Params(**(params or {})), device=device, seed=seed, weights=weights,
               storage_options=storage_options)


def inpaint(
    image: np.ndarray,
    mask: np.ndarray,
    method: str = "hallucinate",
    device: str = "cpu",
    seed: int = 0,
    weights: str | None = None,
    **params: Any,
) -> np.ndarray:
    """Fill `mask` (bool HxW, True = fill) in `image` (HxW or HxWxC, uint8 or uint16).

    Returns the same shape and dtype; every pixel outside the mask is identical to the
    input. For many images, load the method once with `load_method` and call it.
    """
    return load_method(method, params, device, seed, weights)(image, mask).pixels
