"""`hallucinate` (the default) and `tv`: fill holes by optimisation with a classifier prior.

Each hole region starts from scikit-image's biharmonic fill; thin ones (scratches) keep it,
as pure smoothness is what they need. Wide ones get the photo's fine detail mirrored across
the border (blobs: the fine detail of a patch synthesis from the photo's own patches), then
are optimised on TV, the deep-feature context term and the seed's
hallucination term, with weights that grow with the hole's width. Holes narrower than a blob
(strokes) are optimised for fewer steps and averaged half and half with OpenCV's FSR fill of
their luminance, blobs with the patch synthesis they started from (a share of 0.3): the two
fills' errors differ, so their average is closer to the photo.
`tv` is the same optimiser with only the TV term: the seed's regulariser alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from pipeline import optimizer
from pipeline.methods import buckets
from pipeline.methods.base import Canvas, Fill, Method, MethodParams, Result
from pipeline.methods.classical import biharmonic_fill, fsr_fill
from pipeline.methods.patches import patch_fill
from pipeline.optimizer import Budget, Schedule, Weights, optimize_batch
from pipeline.prior import DEFAULT_MODEL, load_prior

InitialFill = Literal["biharmonic", "fsr", "blend", "detail", "mirror", "telea", "patch",
                      "patch-detail"]
# fsr-luminance: FSR on the luminance alone; a colour crop keeps the optimised fill's colour.
SecondFill = Literal["none", "fsr", "fsr-luminance", "patch"]


class OptimizerParams(MethodParams):
    init: InitialFill = Field(
        default="mirror", description="Classical fill the optimisation starts from. blend: "
        "biharmonic at the border fading into FSR over `blend_radius`; detail: biharmonic "
        "plus FSR's fine detail (FSR minus its blur), faded in the same way; mirror: "
        "biharmonic plus the fine detail of the known pixels mirrored across the border; "
        "patch: multi-scale PatchMatch synthesis from the photo's own patches "
        "(pipeline.methods.patches, with its defaults and the run's seed); patch-detail: "
        "biharmonic plus that synthesis' fine detail, faded in as for detail.")
    blob_init: InitialFill = Field(
        default="patch-detail", description="The start of crops whose widest hole is at "
        "least `coarse_radius` wide (blobs): chosen on each held-out half of the quality "
        "benchmark and better on the other (benchmarks/results/quality.md); `init` starts "
        "the narrower ones.")
    average_with: SecondFill = Field(
        default="none", description="A second fill averaged into the optimised one in the "
        "wide holes of crops narrower than `coarse_radius` (strokes): two fills whose errors "
        "differ, averaged, are closer to the photo than either (`average_share` of it). "
        "fsr-luminance averages only the luminance of a colour crop, with FSR run on it "
        "alone (FSR's three channels cost 1.8x one).")
    average_share: float = Field(default=0.5, ge=0, le=1, description="The share of "
                                 "`average_with` in the averaged fill.")
    average_steps: int | None = Field(
        default=None, ge=0, description="Iteration cap per octave of the crops averaged "
        "with `average_with` (None: `steps`): the second fill costs time the optimiser "
        "gives back.")
    blob_average_with: SecondFill = Field(
        default="none", description="As `average_with`, for crops whose widest hole "
        "reaches `coarse_radius` (blobs).")
    blob_average_share: float = Field(default=0.5, ge=0, le=1, description="The share of "
                                      "`blob_average_with` in the averaged fill.")
    blend_radius: float = Field(default=12.0, gt=0, description="Depth (px) over which "
                                "the texture of blend, detail and mirror fades in.")
    mirror_depth: float = Field(default=16.0, gt=0, description="Mirrored detail is kept "
                                "to this depth (px) into a hole and fades out by twice it: "
                                "deeper, the reflection reaches unrelated structure.")
    detail_sigma: float = Field(default=2.0, gt=0, description="Blur (px) that splits a "
                                "fill into the coarse part and the fine detail.")
    thin_radius: float = Field(
        default=4.5, ge=0, description="Holes whose farthest pixel is at most this far "
        "(px) from a known pixel keep the initial fill: scratches need pure smoothness.")
    wide_radius: float = Field(
        default=12.0, gt=0, description="Radius (px) from which the context term gets "
        "its full weight; below, it shrinks in proportion.")
    tv_weight: float = Field(default=1.0, ge=0)
    tv_beta: float = Field(default=1.0, gt=0, description="Exponent of the TV norm.")
    steps: int = Field(default=8, ge=0, description="Iteration cap per octave.")
    lr: float = Field(default=0.01, gt=0, description="Adam step size (pixel units).")
    relative_eps: float | None = Field(
        default=None, gt=0, description="Adam's epsilon in units of each crop's gradient "
        "RMS over its hole (None: Adam's own, absolute): with Adam's own, every hole pixel "
        "moves by about `lr` from the first step however small its gradient, which on flat "
        "backgrounds is speckle; relative, a pixel asked for little moves little.")
    octaves: int | None = Field(
        default=None, ge=1, description="Coarse-to-fine levels; None: from the hole width.")
    finest_octave: int = Field(
        default=0, ge=0, description="Finest level optimised (1: half resolution; the "
        "initial fill's fine texture is kept and the run is about four times cheaper).")
    coarse_radius: float = Field(
        default=24.0, gt=0, description="Holes at least this wide (radius, px) are "
        "optimised at half resolution at most: at full resolution the network terms paint "
        "speckle into wide smooth regions (seen on the contact sheet).")
    patience: int = Field(default=3, ge=1, description="Plateau window in steps (after "
                          "the first): below `steps`, so a crop whose loss stops falling "
                          "stops before the cap.")
    tolerance: float = Field(default=2e-3, ge=0, description="Relative loss drop at or "
                             "below which a window counts as a plateau.")
    time_budget_s: float = Field(default=30.0, gt=0, description="Seconds each photo may "
                                 "take, whatever else is in its batch: its own planning "
                                 "plus its share of the passes it takes part in; past them "
                                 "its current fill is kept. Runs cut by it depend on the "
                                 "machine's speed, not only on the seed.")
    batch_pixels: int = Field(
        default=1_000_000, ge=1, description="Pixels per forward pass: crops of one bucket "
        "(shape rounded up to 64 px, same schedule) from all the photos of a Ray batch are "
        "optimised together up to this size, padded to the bucket's shape; 1: one crop at a "
        "time, each exactly as it would be alone.")


class HallucinateParams(OptimizerParams):
    # Within the 3 s strokes line and better than no averaging on both held-out halves of
    # the quality benchmark; each half's own pick (FSR per channel, FSR at half contrast) is
    # within noise of it there (benchmarks/results/quality.md, third pass).
    average_with: SecondFill = Field(
        default="fsr-luminance", description=OptimizerParams.model_fields[
            "average_with"].description)
    average_steps: int | None = Field(
        default=2, ge=0, description=OptimizerParams.model_fields["average_steps"].description)
    # Fourth pass (benchmarks/results/quality.md): Adam's epsilon relative to each crop's
    # gradient (no first-step speckle on flat walls), the context term at full weight, and
    # the blobs' optimised fill averaged with their own patch synthesis (the start's, reused).
    relative_eps: float | None = Field(
        default=1.0, gt=0, description=OptimizerParams.model_fields["relative_eps"].description)
    blob_average_with: SecondFill = Field(
        default="patch", description=OptimizerParams.model_fields[
            "blob_average_with"].description)
    blob_average_share: float = Field(
        default=0.3, ge=0, le=1, description=OptimizerParams.model_fields[
            "blob_average_share"].description)
    model: str = Field(default=DEFAULT_MODEL, description="Prior network (timm Lite0 or a "
                       "torchvision vgg*/resnet*).")
    context_weight: float = Field(default=1.0, ge=0, description="Deep-feature patch term.")
    context_depth: int = Field(default=3, ge=1, le=4, description="Feature taps the context "
                               "term matches: strides 4, 8, 16, 32.")
    gradient_blur: float = Field(default=1.0, ge=0, description="Sigma (px) of the blur "
                                 "on the network terms' gradients: no pixel-scale speckle.")
    hallucination_weight: float = Field(
        default=0.0, ge=0, description="The seed's class-score term, relative to the other "
        "terms' gradient norm. 0 by default: the benchmark does not support it (see "
        "benchmarks/results/quality.md).")
    hallucination_radius: float = Field(
        default=24.0, ge=0, description="Holes at least this wide (radius, px) get the "
        "hallucination term; narrower ones are rebuilt from the photo's own texture.")


@dataclass
class Plan:
    """One crop's start and, when it needs optimising, how (weights None: it is done)."""

    start: np.ndarray
    hole: np.ndarray
    weights: Weights | None = None
    octaves: int = 1
    finest: int = 0
    partner: np.ndarray | None = None  # a second fill, averaged into the result
    share: float = 0.0
    steps: int = 0

    def finish(self, pixels: np.ndarray) -> np.ndarray:
        """The crop's final pixels: `share` of the partner fill in the (wide) hole; a
        one-channel partner of a colour crop moves only its luminance (the channel mean)."""
        if self.partner is None:
            return pixels
        if self.partner.shape[2] == pixels.shape[2]:
            averaged = (1 - self.share) * pixels + self.share * self.partner
        else:
            luminance = pixels.mean(axis=2, keepdims=True)
            averaged = np.clip(pixels + self.share * (self.partner - luminance), 0, 1)
        return np.where(self.hole[:, :, None], averaged, pixels).astype(np.float32)

    def bucket(self) -> tuple:
        """Crops with the same bucket can share forward passes."""
        shared = replace(self.weights, tv=0.0, context=float(self.weights.context > 0),
                         hallucination=float(self.weights.hallucination > 0))
        shape = buckets.bucket_shape(*self.hole.shape)
        return shape, self.start.shape[2], self.octaves, self.finest, self.steps, shared


@dataclass
class Pending:
    item: int
    canvas: Canvas
    box: tuple[int, int, int, int]
    plan: Plan


class TotalVariation(Method):
    """The optimiser with only the TV term."""

    name = "tv"
    Params = OptimizerParams

    def __init__(self, params=None, device="cpu", seed=0, weights=None, storage_options=None):
        super().__init__(params, device, seed, weights, storage_options)
        self.prior = None
        self.budget = Budget(self.params.time_budget_s)

    def term_weights(self, radius: float) -> Weights:
        return Weights(tv=self.params.tv_weight, tv_beta=self.params.tv_beta)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> Result:
        outcome = self.call_many([(image, mask)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def call_many(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[Result | Exception]:
        """Plan every crop of every image (thin holes are done at once), then optimise the
        rest bucket by bucket, several crops per forward pass."""
        # Each photo has its own time budget, shared by all its crops; its planning counts.
        self.budget = Budget(self.params.time_budget_s)
        outcomes: list[Canvas | Exception] = []
        pending: list[Pending] = []
        for image, mask in pairs:
            started, item = optimizer.clock(), len(outcomes)
            try:
                outcomes.append(self._plan_image(image, mask, item, pending))
            except Exception as error:
                outcomes.append(error)
            self.budget.charge([item], optimizer.clock() - started)
        for item, error in self._optimise(pending):
            outcomes[item] = error
        return [o if isinstance(o, Exception) else o.result() for o in outcomes]

    def fill(self, image: np.ndarray, mask: np.ndarray) -> Fill:
        self.budget = Budget(self.params.time_budget_s)
        plan = self.plan(image, mask)
        if plan.weights is None:
            return Fill(plan.finish(plan.start), 0, None)
        return self._optimise_together([plan])[0]

    def _plan_image(self, image, mask, item: int, pending: list[Pending]) -> Canvas:
        canvas = self.canvas(image, mask)
        waiting = []
        for box in canvas.boxes:
            plan = self.plan(*canvas.crop(box))
            if plan.weights is None:
                canvas.paste(box, Fill(plan.finish(plan.start), 0, None))
            else:
                waiting.append(Pending(item, canvas, box, plan))
        pending.extend(waiting)  # only once the whole image planned without error
        return canvas

    def plan(self, image: np.ndarray, mask: np.ndarray) -> Plan:
        params = self.params
        smooth = np.where(mask[:, :, None], biharmonic_fill(image, mask), image)
        wide, radius = wide_holes(mask, params.thin_radius)
        if not wide.any():
            return Plan(smooth, wide)  # scratches only: pure smoothness
        coarse = radius >= params.coarse_radius
        kind = params.blob_init if coarse else params.init
        sources: dict = {}
        start = np.where(wide[:, :, None], initial_fill(image, mask, params, smooth,
                                                        self.seed, kind, sources), smooth)
        partner_kind, share = ((params.blob_average_with, params.blob_average_share) if coarse
                               else (params.average_with, params.average_share))
        partner = (second_fill(image, mask, params, smooth, self.seed, partner_kind, sources)
                   if partner_kind != "none" and share > 0 else None)
        steps = params.steps
        if partner is not None and not coarse and params.average_steps is not None:
            steps = params.average_steps
        if steps == 0:
            return Plan(start, wide, partner=partner, share=share)
        finest = max(params.finest_octave, int(coarse))
        octaves = params.octaves or 1 + max(0, int(math.log2(max(radius, 1) / 24)))
        return Plan(start, wide, self.term_weights(radius), max(octaves, finest + 1), finest,
                    partner, share, steps)

    def _optimise(self, pending: list[Pending]) -> list[tuple[int, Exception]]:
        """Paste every optimised crop into its canvas; returns the items that failed.

        A failing chunk is retried crop by crop, so one bad crop fails only its own item.
        """
        failed: dict[int, Exception] = {}
        for bucket in buckets.group(pending, lambda entry: entry.plan.bucket()):
            height, width = bucket[0].plan.bucket()[0]
            for chunk in buckets.chunks(bucket, height * width, self.params.batch_pixels):
                if not self._optimise_and_paste(chunk, failed) and len(chunk) > 1:
                    for entry in chunk:
                        self._optimise_and_paste([entry], failed)
        return list(failed.items())

    def _optimise_and_paste(self, entries: list[Pending], failed: dict[int, Exception]) -> bool:
        """True when done; a lone crop's error is recorded as its item's failure."""
        try:
            fills = self._optimise_together([entry.plan for entry in entries],
                                            [entry.item for entry in entries])
            for entry, filled in zip(entries, fills, strict=True):
                entry.canvas.paste(entry.box, filled)
        except Exception as error:
            if len(entries) == 1:
                failed[entries[0].item] = error
            return False
        return True

    def _optimise_together(self, plans: list[Plan], owners: list[int] | None = None
                           ) -> list[Fill]:
        """One `optimize_batch` call; crops are padded to their bucket's shape only when
        they share it, so a crop alone is optimised exactly as it is. `owners`: the photo
        each crop is from, whose time budget it spends (default: one photo)."""
        first = plans[0]
        shape = first.bucket()[0] if len(plans) > 1 else first.hole.shape
        padded = [buckets.pad(plan.start, plan.hole, shape) for plan in plans]
        schedule = Schedule(steps=first.steps, lr=self.params.lr, octaves=first.octaves,
                            finest=first.finest, patience=self.params.patience,
                            tolerance=self.params.tolerance,
                            relative_eps=self.params.relative_eps)
        outcomes = optimize_batch([p[0] for p in padded], [p[1] for p in padded], self.prior,
                                  [plan.weights for plan in plans], schedule, self.seed,
                                  self.device, padding=[p[2] for p in padded],
                                  budget=self.budget, owners=owners or [0] * len(plans))
        return [Fill(plan.finish(buckets.unpad(outcome.pixels, plan.hole.shape)),
                     outcome.iterations, outcome.loss)
                for plan, outcome in zip(plans, outcomes, strict=True)]


class Hallucinate(TotalVariation):
    """Optimisation with TV, the context term and the seed's hallucination term."""

    name = "hallucinate"
    Params = HallucinateParams

    def __init__(self, params=None, device="cpu", seed=0, weights=None, storage_options=None):
        super().__init__(params, device, seed, weights, storage_options)
        self.prior = load_prior(self.params.model, weights, self.storage_options).to(device)
        # Read by the worker into the manifest.
        self.model_name = self.prior.name
        self.weights_sha256 = self.prior.weights_sha256

    def term_weights(self, radius: float) -> Weights:
        share = min(1.0, radius / self.params.wide_radius)
        imagine = radius >= self.params.hallucination_radius
        return Weights(
            hallucination=self.params.hallucination_weight if imagine else 0.0,
            tv=self.params.tv_weight,
            context=self.params.context_weight * share,
            tv_beta=self.params.tv_beta,
            context_depth=self.params.context_depth,
            gradient_blur=self.params.gradient_blur,
        )


def initial_fill(image: np.ndarray, mask: np.ndarray, params: OptimizerParams,
                 smooth: np.ndarray, seed: int = 0, kind: str | None = None,
                 sources: dict | None = None) -> np.ndarray:
    """The fill the optimisation starts from (`kind`, `params.init` by default); `smooth` is
    the biharmonic fill; `seed` decides the random draws of `patch`. `sources` keeps the
    FSR and patch fills computed, for a second call on the same crop (the averaged fill)."""
    kind = kind or params.init
    sources = {} if sources is None else sources

    def source(name: str) -> np.ndarray:
        if name not in sources:
            sources[name] = (patch_fill(image, mask, seed) if name == "patch"
                             else fsr_fill(image, mask))
        return sources[name]

    # How deep each hole pixel lies: texture fades in from the border over `blend_radius`.
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    share = np.clip(distance / params.blend_radius, 0, 1)[:, :, None]
    if kind == "fsr":
        filled = source("fsr")
    elif kind in ("blend", "detail", "patch-detail"):
        # Biharmonic continues edges across the border; FSR brings texture to the middle.
        # FSR's coarse part can be off-palette blocks (green in a stained slide, black in a
        # fundus), so `detail` takes only its fine detail on top of the biharmonic fill;
        # `patch-detail` does the same with the patch synthesis, whose coarse part can copy
        # the wrong structure (fur into an eye).
        textured = source("patch" if kind == "patch-detail" else "fsr")
        if kind == "blend":
            filled = (1 - share) * smooth + share * textured
        else:
            blurred = cv2.GaussianBlur(textured, (0, 0), params.detail_sigma)
            filled = np.clip(smooth + share * (textured - blurred.reshape(textured.shape)), 0, 1)
    elif kind == "mirror":
        fade_out = np.clip(2 - distance / params.mirror_depth, 0, 1)[:, :, None]
        detail = mirrored_detail(np.where(mask[:, :, None], smooth, image), mask,
                                 params.detail_sigma)
        filled = np.clip(smooth + share * fade_out * detail, 0, 1)
    elif kind == "patch":
        filled = source("patch")
    elif kind == "telea":
        from pipeline.methods.opencv import Telea

        filled = Telea().fill(image, mask).pixels
    else:
        filled = smooth
    return np.where(mask[:, :, None], filled, image).astype(np.float32)


def second_fill(image: np.ndarray, mask: np.ndarray, params: OptimizerParams,
                smooth: np.ndarray, seed: int, kind: str, sources: dict) -> np.ndarray:
    """The fill averaged into the optimised one: `kind` as an initial fill, or for
    fsr-luminance FSR on the crop's luminance alone (one channel; the crop itself when it
    has one channel, a gray or toned print, so it is the start's FSR fill)."""
    if kind != "fsr-luminance" or image.shape[2] == 1:
        return initial_fill(image, mask, params, smooth, seed, kind.removesuffix("-luminance"),
                            sources)
    luminance = image.mean(axis=2, keepdims=True)
    return np.where(mask[:, :, None], fsr_fill(luminance, mask), luminance).astype(np.float32)


def mirrored_detail(image: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Fine detail (image minus its blur) for the hole, mirrored from across its border.

    Each hole pixel takes the detail of its reflection through the nearest known pixel:
    grain, fur and weave continue across the border at their own scale and contrast, for
    the cost of a distance transform. `image` must already hold a smooth fill in the hole,
    so the blur near the border is not pulled by damaged pixels. Reflections that land in
    a hole or off the frame give no detail.
    """
    detail = image - cv2.GaussianBlur(image, (0, 0), sigma).reshape(image.shape)
    _, labels = cv2.distanceTransformWithLabels(mask.astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    known_rows, known_cols = np.nonzero(~mask)
    nearest = np.zeros((labels.max() + 1, 2), np.int64)
    nearest[labels[known_rows, known_cols]] = np.stack([known_rows, known_cols], axis=1)
    rows, cols = np.nonzero(mask)
    border = nearest[labels[rows, cols]]
    source_rows = 2 * border[:, 0] - rows
    source_cols = 2 * border[:, 1] - cols
    inside = ((source_rows >= 0) & (source_rows < mask.shape[0])
              & (source_cols >= 0) & (source_cols < mask.shape[1]))
    rows, cols = rows[inside], cols[inside]
    source_rows, source_cols = source_rows[inside], source_cols[inside]
    known = ~mask[source_rows, source_cols]
    mirrored = np.zeros_like(detail)
    mirrored[rows[known], cols[known]] = detail[source_rows[known], source_cols[known]]
    return mirrored


def wide_holes(mask: np.ndarray, thin_radius: float) -> tuple[np.ndarray, float]:
    """The hole pixels of regions wider than `thin_radius`, and the widest region's radius.

    Radius: the largest distance from a hole pixel to the nearest known pixel.
    """
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask), 0.0
    radii = np.zeros(count, np.float32)
    np.maximum.at(radii, labels.ravel(), distance.ravel())
    radii[0] = 0
    wide_labels = radii > thin_radius
    return wide_labels[labels] & mask, float(radii.max())

