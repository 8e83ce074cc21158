"""The method contract and the work every method shares.

A method only fills float pixels inside a crop. Dtype and colour handling, the alpha
channel, cropping around the holes and the guarantee that known pixels come back
bit-identical all live here, once, in `Canvas`; `Method.call_many` fills the images of a
Ray batch, one outcome per image, so one bad image never fails the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline import tone

# Above this many pixels, holes are grouped into crops on a coarser grid.
REGION_GRID_PIXELS = 1_000_000


class MethodParams(BaseModel):
    """Base of every method's own typed params; unknown params are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tone: Literal["auto", "colour"] = Field(
        default="auto", description="auto: a gray or toned (sepia) print, judged from its "
        "known pixels, is filled on luminance and coloured by its own tone curve, so fills "
        "add no colour; colour: every photo is filled channel by channel.")


class NothingToConditionOn(ValueError):
    """The mask covers every pixel: there is no known pixel to fill from."""


@dataclass
class Fill:
    """What `Method.fill` returns: float32 pixels in [0, 1] of the crop it was given."""

    pixels: np.ndarray
    iterations: int | None = None
    loss: float | None = None


@dataclass
class Result:
    """What `Method.__call__` returns: pixels of the input's shape and dtype."""

    pixels: np.ndarray
    iterations: int | None = None
    loss: float | None = None
    tone: tone.ToneKind | None = None  # how the fill treated colour (pipeline.tone)


class Method:
    """Subclass, set `name` and `Params`, implement `fill`; register it in `methods/__init__`."""

    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams
    # Known pixels kept around each group of holes when cropping: the context a method
    # sees. Holes closer than this share a crop.
    context_margin: ClassVar[int] = 24
    # Above this share of the frame, crops stop paying off and the whole frame is used.
    full_frame_above: ClassVar[float] = 0.6

    def __init__(self, params: MethodParams | None = None, device: str = "cpu", seed: int = 0,
                 weights: str | None = None, storage_options: dict | None = None):
        # `seed` and `weights` are run settings (RunSettings.seed/.weights), not method params:
        # only stochastic methods and those with a prior network use them. `storage_options`
        # reach the `weights` URI as they reach every other one.
        self.params = params if params is not None else self.Params()
        self.device = device
        self.seed = seed
        self.weights = weights
        self.storage_options = storage_options or {}

    def fill(self, image: np.ndarray, mask: np.ndarray) -> Fill:
        """Fill `mask` (bool HxW, True = hole) in `image` (float32 HxWxC, C 1 or 3, [0, 1])."""
        raise NotImplementedError

    def canvas(self, image: np.ndarray, mask: np.ndarray) -> Canvas:
        return Canvas(image, mask, self.context_margin, self.full_frame_above,
                      by_tone=self.params.tone == "auto")

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Result:
        """Fill an HxW or HxWxC uint8/uint16 image; pixels outside `mask` stay identical."""
        canvas = self.canvas(image, mask)
        # One crop at a time: a 40 MP 16-bit scan with a few scratches must not cost
        # several full-frame float copies.
        for box in canvas.boxes:
            canvas.paste(box, self.fill(*canvas.crop(box)))
        return canvas.result()

    def call_many(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[Result | Exception]:
        """Fill several images (a Ray batch): each gets its Result or the exception that
        stopped it. Methods that share work across images (a GPU batch) override this."""
        outcomes: list[Result | Exception] = []
        for image, mask in pairs:
            try:
                outcomes.append(self(image, mask))
            except Exception as error:
                outcomes.append(error)
        return outcomes


class Canvas:
    """One image being filled: crops go out as float, fills come back in.

    Only hole pixels are ever assigned, so pixels outside the mask come back identical.
    With `by_tone`, a gray or toned photo goes out as its luminance and comes back on its
    tone curve (pipeline.tone).
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray, margin: int,
                 full_frame_above: float, by_tone: bool = True):
        check_inputs(image, mask)
        if mask.any() and mask.all():
            raise NothingToConditionOn("the mask covers the whole image: nothing to fill from")
        self.mask = mask
        self.colour, self.alpha = split_alpha(image)
        self.tone = tone.decide(self.colour, mask) if by_tone else tone.COLOUR
        self.pixels = image.copy()
        self.boxes = hole_regions(mask, margin, full_frame_above) if mask.any() else []
        self.iterations = 0
        self.losses: list[float] = []

    def crop(self, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(float32 HxWxC pixels in [0, 1], bool hole) of one box."""
        top, left, bottom, right = box
        pixels = to_float(self.colour[top:bottom, left:right])
        if self.tone.by_luminance and pixels.shape[2] == 3:
            pixels = self.tone.luminance(pixels)
        return pixels, self.mask[top:bottom, left:right]

    def paste(self, box: tuple[int, int, int, int], result: Fill) -> None:
        top, left, bottom, right = box
        crop_mask = self.mask[top:bottom, left:right]
        shape = self.colour[top:bottom, left:right].shape
        pixels = result.pixels
        if len(shape) == 3 and shape[2] == 3 and pixels.shape[2] == 1:
            pixels = self.tone.colour(pixels)
        filled = from_float(pixels, self.colour.dtype).reshape(shape)
        target = self.pixels[top:bottom, left:right]
        if self.alpha is not None:
            target = target[:, :, :3]
        target[crop_mask] = filled[crop_mask]
        self.iterations += result.iterations or 0
        if result.loss is not None:
            self.losses.append(result.loss)

    def result(self) -> Result:
        return Result(
            self.pixels,
            iterations=self.iterations if self.iterations else None,
            loss=float(np.mean(self.losses)) if self.losses else None,
            tone=self.tone.kind,
        )


def check_inputs(image: np.ndarray, mask: np.ndarray) -> None:
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"image must be uint8 or uint16, not {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"image must be HxW or HxWxC with C in 1, 3, 4; got {image.shape}")
    if mask.dtype != bool or mask.shape != image.shape[:2]:
        raise ValueError(f"mask must be bool of shape {image.shape[:2]}; got {mask.dtype} "
                         f"{mask.shape}")


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Separate an alpha channel, which is kept as it was: only colour is filled."""
    if image.ndim == 3 and image.shape[2] == 4:
        return image[:, :, :3], image[:, :, 3:]
    return image, None


def to_float(image: np.ndarray) -> np.ndarray:
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    pixels = image.astype(np.float32) / scale
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def from_float(pixels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    scale = 65535.0 if dtype == np.uint16 else 255.0
    return np.clip(np.rint(pixels * scale), 0, scale).astype(dtype)


def hole_regions(
    mask: np.ndarray, margin: int, full_frame_above: float = 0.6
) -> list[tuple[int, int, int, int]]:
    """Boxes (top, left, bottom, right) that cover every hole with `margin` of context.

    Holes within `margin` of each other fall in one box, so a scratch is one crop, not
    a hundred; cost then follows the damage, not the size of the photo. On big scans the
    holes are grouped on a coarser grid (one cell per `step` x `step` block): labelling a
    40 MP frame costs more than filling a few scratches, and boxes only grow by < `step` px.
    """
    height, width = mask.shape
    step = max(1, math.ceil(math.sqrt(height * width / REGION_GRID_PIXELS)))
    coarse = block_any(mask, step)
    size = 2 * math.ceil(margin / step) + 1
    grown = cv2.dilate(coarse.astype(np.uint8), np.ones((size, size), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    boxes = [
        (int(y) * step, int(x) * step, min(height, int(y + h) * step),
         min(width, int(x + w) * step))
        for x, y, w, h, _ in stats[1:count]
    ]
    covered = sum((b - t) * (r - left) for t, left, b, r in boxes)
    if covered > full_frame_above * height * width:
        return [(0, 0, height, width)]
    return boxes


def block_any(mask: np.ndarray, step: int) -> np.ndarray:
    """One cell per `step` x `step` block: True where any of its pixels is."""
    if step == 1:
        return mask
    coarse = np.zeros((-(-mask.shape[0] // step), -(-mask.shape[1] // step)), bool)
    # OpenCV's scan of a sparse mask is several times faster than numpy's nonzero.
    points = cv2.findNonZero(np.ascontiguousarray(mask).view(np.uint8))
    if points is not None:
        columns, rows = points.reshape(-1, 2).T
        coarse[rows // step, columns // step] = True
    return coarse
