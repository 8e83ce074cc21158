"""The optimisation core: hole pixels descend a weighted sum of objective terms.

Terms: the seed's hallucination term (a class score of the prior network), isotropic total
variation with a beta exponent, and a deep-feature patch context term (neural patch
synthesis). Known pixels are constants, never parameters. Coarse-to-fine octaves, early
stopping on a plateau, an iteration cap and a time budget per photo; CPU runs are seeded.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.prior import Prior

# Read through the module at each use, so a test can drive a clock of its own.
clock = time.perf_counter


@dataclass(frozen=True)
class Weights:
    """Weight of each term. `hallucination` is relative: its gradient is rescaled to
    that share of the other terms' gradient norm (gradient normalisation)."""

    hallucination: float = 0.0
    tv: float = 1.0
    context: float = 0.0
    tv_beta: float = 1.0
    context_depth: int = 2  # feature taps matched: strides 4, 8, then 16, 32
    gradient_blur: float = 0.0  # sigma (px) of the blur on the network terms' gradients


@dataclass(frozen=True)
class Schedule:
    steps: int = 40
    lr: float = 0.01
    octaves: int = 1
    finest: int = 0  # the finest octave optimised: 1 stops at half resolution
    patience: int = 8
    tolerance: float = 2e-3
    rematch_every: int = 10
    # Adam's epsilon in units of each crop's gradient RMS over its hole (None: Adam's own,
    # 1e-8 absolute). Adam divides each pixel's step by its own gradient's size, so from
    # the first step every hole pixel moves by about `lr`, however little its gradient asks:
    # on a flat wall that is speckle. Measured against the crop's typical gradient, a pixel
    # asked for little moves little.
    relative_eps: float | None = None


@dataclass
class Budget:
    """Seconds each photo (`owner`) may spend; past them its crops keep the fill they have.

    Every photo has its own allowance, whatever else shares its batch: a pass that
    optimises several crops together is charged to their photos in equal shares, so a slow
    photo spends only its own time. Time is read from `clock`.
    """

    seconds: float
    spent: dict[Hashable, float] = field(default_factory=lambda: defaultdict(float))

    def charge(self, owners: list[Hashable], seconds: float) -> None:
        for owner in owners:
            self.spent[owner] += seconds / len(owners)

    def left(self, owner: Hashable) -> bool:
        return self.spent[owner] < self.seconds


@dataclass
class Outcome:
    pixels: np.ndarray
    iterations: int
    loss: float | None
    stopped: str  # "plateau", "cap" or "budget"


def optimize(
    image: np.ndarray,
    hole: np.ndarray,
    prior: Prior | None,
    weights: Weights,
    schedule: Schedule,
    seed: int = 0,
    device: str = "cpu",
    budget: Budget | None = None,
) -> Outcome:
    """Descend from `image` (float32 HxWxC in [0, 1], holes already filled by an initial
    fill) changing only pixels where `hole` (bool HxW) is True; coarse octaves first."""
    return optimize_batch([image], [hole], prior, weights, schedule, seed, device,
                          budget=budget)[0]


def optimize_batch(
    images: list[np.ndarray],
    holes: list[np.ndarray],
    prior: Prior | None,
    weights: Weights | list[Weights],
    schedule: Schedule,
    seed: int = 0,
    device: str = "cpu",
    padding: list[np.ndarray] | None = None,
    budget: Budget | None = None,
    owners: list[Hashable] | None = None,
) -> list[Outcome]:
    """`optimize` for several crops of one shape, sharing the network's passes (a GPU's
    bucket). Each crop stays its own problem: its own seeded generator, exemplars and
    plateau stop, as if alone. `weights` may differ per crop in the terms' weights, not in
    which terms there are or how they are computed. `padding` (bool HxW each) marks pixels
    added to reach the bucket's shape: they are known, but never serve as exemplars.
    `budget` limits the time of each crop's photo, `owners` (default: each crop its own
    photo); a crop whose photo has no time left keeps the fill it has ("budget").

    Each octave's change, not its image, is carried up to full resolution: the fine
    texture of the initial fill survives, and the coarse octaves are a smooth
    parameterisation of the update (and four times cheaper per level).
    """
    count = len(images)
    per_crop = weights if isinstance(weights, list) else [weights] * count
    owners = owners if owners is not None else list(range(count))
    generators = [torch.Generator().manual_seed(seed) for _ in range(count)]
    current = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device)
    full_hole = torch.from_numpy(np.stack(holes))[:, None].to(device)
    full_padding = (torch.from_numpy(np.stack(padding))[:, None].to(device)
                    if padding is not None else torch.zeros_like(full_hole))
    iterations, losses, stopped = [0] * count, [None] * count, ["cap"] * count
    for octave in reversed(range(schedule.finest, max(schedule.octaves, schedule.finest + 1))):
        base, coarse_hole, coarse_padding = _downscale(current, full_hole, full_padding,
                                                       2**octave)
        if not coarse_hole.any():
            continue
        descent = _descend(base, coarse_hole, coarse_padding, prior, per_crop, schedule,
                           generators, budget, owners)
        for index in range(count):
            iterations[index] += descent.steps[index]
            losses[index] = descent.losses[index]
            stopped[index] = descent.stopped[index]
        change = descent.result - base
        if octave:
            change = F.interpolate(change, size=current.shape[-2:], mode="bilinear",
                                   align_corners=False)
        current = torch.where(full_hole, (current + change).clamp(0, 1), current)
        if budget is not None and not any(budget.left(owner) for owner in owners):
            break
    pixels = current.permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy()
    return [Outcome(pixels[index], iterations[index], losses[index], stopped[index])
            for index in range(count)]


def _downscale(image: torch.Tensor, hole: torch.Tensor, padding: torch.Tensor, factor: int):
    if factor == 1:
        return image, hole, padding
    size = (max(8, image.shape[-2] // factor), max(8, image.shape[-1] // factor))
    small = F.interpolate(image, size=size, mode="area")
    # A coarse pixel is known only if none of the pixels it averages is a hole, and padding
    # if any of them is.
    small_hole = F.interpolate(hole.float(), size=size, mode="area") > 0
    small_padding = F.interpolate(padding.float(), size=size, mode="area") > 0
    return small, small_hole, small_padding


@dataclass
class Descent:
    """One octave's outcome for each crop of the batch."""

    result: torch.Tensor
    steps: list[int]
    losses: list[float | None]
    stopped: list[str]


def _descend(base, hole, padding, prior, per_crop, schedule, generators, budget=None,
             owners=None) -> Descent:
    """Adam on the hole pixels of one octave. A crop that reaches its plateau, or whose
    photo's budget is spent, keeps the pixels it had then; the others go on (Adam is per
    pixel, so they do not interact). Each step's time is charged to the active crops."""
    started = clock()
    count = base.shape[0]
    shared = per_crop[0]  # which terms, and how they are computed
    tv_weight, context_weight, hallucination_weight = (
        torch.tensor([getattr(w, name) for w in per_crop], device=base.device)
        for name in ("tv", "context", "hallucination"))
    keep = (~hole).float()
    known = base * keep
    parameter = base.clone().requires_grad_(True)
    optimizer = (torch.optim.Adam([parameter], lr=schedule.lr) if schedule.relative_eps is None
                 else torch.optim.Adam([parameter], lr=schedule.lr, eps=schedule.relative_eps))
    context = (ContextTerm(prior, hole, padding, generators, shared.context_depth)
               if context_weight.max() > 0 and prior is not None else None)
    hallucination = (HallucinationTerm(prior, base, generators)
                     if hallucination_weight.max() > 0 and prior is not None else None)
    histories: list[list[float]] = [[] for _ in range(count)]
    results: list[torch.Tensor | None] = [None] * count
    steps, stopped = [0] * count, ["cap"] * count
    active = list(range(count))
    for index in range(count):
        if budget is not None and not budget.left(owners[index]):
            stopped[index], results[index] = "budget", _compose(known, parameter, keep, index)
            active.remove(index)
    for step in range(1, (schedule.steps if active else 0) + 1):
        image = known + parameter * (1 - keep)
        terms = tv_weight * tv_loss(image, hole, shared.tv_beta)
        if context is not None:
            if (step - 1) % schedule.rematch_every == 0:
                context.rematch(image)
            seen = _smooth_gradient(image, shared.gradient_blur)
            terms = terms + context_weight * context.loss(seen)
        optimizer.zero_grad()
        if hallucination is not None:
            parameter.grad = _normalised_sum(terms, hallucination.loss(image), parameter,
                                             hallucination_weight)
        else:
            terms.sum().backward()
        if schedule.relative_eps is not None:
            _to_unit_rms(parameter.grad, hole)
        optimizer.step()
        with torch.no_grad():
            parameter.clamp_(0, 1)
        values = terms.detach().cpu().tolist()
        now = clock()
        if budget is not None:
            budget.charge([owners[index] for index in active], now - started)
        started = now
        for index in list(active):
            histories[index].append(values[index])
            steps[index] = step
            if _plateau(histories[index], schedule.patience, schedule.tolerance):
                stopped[index] = "plateau"
            elif budget is not None and not budget.left(owners[index]):
                stopped[index] = "budget"
            else:
                continue
            results[index] = _compose(known, parameter, keep, index)
            active.remove(index)
        if not active:
            break
    for index in active:
        results[index] = _compose(known, parameter, keep, index)
    losses = [history[-1] if history else None for history in histories]
    return Descent(torch.stack(results), steps, losses, stopped)


def _to_unit_rms(gradient: torch.Tensor, hole: torch.Tensor) -> None:
    """Divide each crop's gradient by its RMS over the crop's hole pixels (in place), so
    a relative epsilon means the same on every crop, octave and mix of terms."""
    with torch.no_grad():
        count = (hole.flatten(1).sum(1) * gradient.shape[1]).clamp(min=1)
        rms = (gradient.flatten(1).pow(2).sum(1) / count).sqrt().clamp(min=1e-30)
        gradient.div_(rms.view(-1, 1, 1, 1))


def _compose(known: torch.Tensor, parameter: torch.Tensor, keep: torch.Tensor,
             index: int) -> torch.Tensor:
    with torch.no_grad():
        return known[index] + parameter.detach()[index] * (1 - keep[index])


def _smooth_gradient(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Same forward value, blurred backward: a network's gradient reaches the pixels
    smoothed, so it cannot paint pixel-scale speckle (a smoother parameterisation)."""
    if sigma <= 0:
        return image
    blurred = _blur(image, sigma)
    return image.detach() + blurred - blurred.detach()


def _normalised_sum(terms, hallucination, parameter, weight):
    """Gradient of `terms` plus the hallucination gradient scaled to `weight` (one per crop)
    times the norm of the other terms' gradient, crop by crop.

    A classifier's raw gradient is tiny in some places and huge in others; normalising it
    makes the weight mean the same thing on every photo and every octave.
    """
    (rest,) = torch.autograd.grad(terms.sum(), parameter, retain_graph=True)
    (push,) = torch.autograd.grad(hallucination.sum(), parameter)
    scale = rest.flatten(1).norm(dim=1) / (push.flatten(1).norm(dim=1) + 1e-12)
    return rest + (weight * scale).view(-1, 1, 1, 1) * push


def _plateau(history: list[float], patience: int, tolerance: float) -> bool:
    """True when the loss fell by at most `tolerance` (relative) over `patience` steps.

    The first loss (the start's, before any step) is no reference: Adam's first step moves
    every pixel by the full step size and often raises the loss, which then falls fast
    (seen on a launch tower's strokes: a window from it called a plateau at once).
    """
    losses = history[1:]
    if len(losses) <= patience:
        return False
    before, now = losses[-patience - 1], losses[-1]
    return before - now <= tolerance * abs(before)


def tv_loss(image: torch.Tensor, hole: torch.Tensor, beta: float) -> torch.Tensor:
    """Isotropic colour TV, (|dx|^2 + |dy|^2)^(beta/2), over pixels touching the hole;
    one value per crop of the batch."""
    dx = F.pad(image[..., :, 1:] - image[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(image[..., 1:, :] - image[..., :-1, :], (0, 0, 0, 1))
    magnitude = (dx**2 + dy**2).sum(1, keepdim=True) + 1e-6
    near = F.max_pool2d(hole.float(), 3, stride=1, padding=1)
    total = (magnitude ** (beta / 2) * near).sum(dim=(1, 2, 3))
    return total / hole.sum(dim=(1, 2, 3)).clamp(min=1)


class ContextTerm:
    """Pull each deep-feature patch in the hole toward its nearest patch outside it.

    3x3 patches of the prior's features at strides 4, 8 and deeper, compared by cosine;
    nearest neighbours are found again every few steps, as in neural patch synthesis (Yang
    et al., CVPR 2017). Only patches wholly outside the hole (and the padding) of their own
    crop serve as exemplars.
    """

    max_exemplars = 2048

    def __init__(self, prior: Prior, hole: torch.Tensor, padding: torch.Tensor,
                 generators: list[torch.Generator], depth: int = 2):
        self.prior = prior
        self.depth = depth
        self.hole = hole
        self.padding = padding
        self.generators = generators
        # Per tap, per crop: the target patches (None: nothing to match) and hole cells.
        self.targets: list[list[torch.Tensor | None]] = []
        self.hole_cells: list[list[torch.Tensor]] = []

    def _patches(self, image: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(unit patches N x K*9 x h*w, hole cells bool N x h x w) for each feature tap."""
        found = []
        for features in self.prior.features(self.prior.normalize(image), self.depth):
            size = features.shape[-2:]
            cells = F.interpolate(self.hole.float(), size=size, mode="area")[:, 0] > 0
            patches = F.unfold(features, 3, padding=1)
            found.append((F.normalize(patches, dim=1), cells))
        return found

    def rematch(self, image: torch.Tensor) -> None:
        self.targets, self.hole_cells = [], []
        with torch.no_grad():
            for patches, cells in self._patches(image):
                size = cells.shape[-2:]
                padded = F.interpolate(self.padding.float(), size=size, mode="area")[:, 0] > 0
                blocked = (cells | padded)[:, None].float()
                outside = (F.max_pool2d(blocked, 3, 1, 1)[:, 0] == 0).flatten(1)
                inside = cells.flatten(1)
                self.targets.append([
                    self._match(patches[index], inside[index], outside[index],
                                self.generators[index])
                    for index in range(patches.shape[0])])
                self.hole_cells.append(list(inside))

    def _match(self, patches: torch.Tensor, inside: torch.Tensor, outside: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor | None:
        candidates = torch.nonzero(outside).flatten()
        if candidates.numel() == 0 or not inside.any():
            return None
        if candidates.numel() > self.max_exemplars:
            pick = torch.randperm(candidates.numel(), generator=generator)
            candidates = candidates[pick[: self.max_exemplars].to(candidates.device)]
        exemplars = patches[:, candidates]
        nearest = (patches[:, inside].T @ exemplars).argmax(dim=1)
        return exemplars[:, nearest]

    def loss(self, image: torch.Tensor) -> torch.Tensor:
        """One value per crop."""
        per_crop = [image.new_zeros(()) for _ in range(image.shape[0])]
        for (patches, _), targets, cells in zip(self._patches(image), self.targets,
                                                self.hole_cells, strict=True):
            for index, (target, inside) in enumerate(zip(targets, cells, strict=True)):
                if target is not None:
                    similarity = (patches[index][:, inside] * target).sum(0)
                    per_crop[index] = per_crop[index] + (1 - similarity).mean()
        return torch.stack(per_crop)


class HallucinationTerm:
    """The seed's term: raise the class score the network gives the photo around the hole.

    Remedies against the adversarial pattern a classifier's gradient is: the class is
    the one the network sees in the initial fill (fixed), the view is a jittered copy at
    the network's working resolution, and the gradient reaching the pixels is blurred
    (a smoother parameterisation), besides the octaves and gradient normalisation.
    """

    view_size = 224
    jitter = 8

    def __init__(self, prior: Prior, base: torch.Tensor, generators: list[torch.Generator]):
        self.prior = prior
        self.generators = generators
        with torch.no_grad():
            self.targets = self.prior.logits(self._view(base, jitter=False)).argmax(dim=1)

    def _view(self, image: torch.Tensor, jitter: bool = True) -> torch.Tensor:
        scale = self.view_size / max(image.shape[-2:])
        if scale < 1:
            size = tuple(max(32, round(side * scale)) for side in image.shape[-2:])
            image = F.interpolate(image, size=size, mode="bilinear", antialias=True,
                                  align_corners=False)
        if jitter:  # each crop its own shift, from its own generator
            image = torch.cat([self._jittered(view[None], generator)
                               for view, generator in zip(image, self.generators, strict=True)])
        return self.prior.normalize(image)

    def _jittered(self, view: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        dy, dx = torch.randint(-self.jitter, self.jitter + 1, (2,), generator=generator)
        return torch.roll(view, (int(dy), int(dx)), dims=(-2, -1))

    def loss(self, image: torch.Tensor) -> torch.Tensor:
        """One value per crop."""
        # Same forward value, blurred backward: the gradient w.r.t. pixels is smoothed.
        smooth = image.detach() + _blur(image) - _blur(image).detach()
        logits = self.prior.logits(self._view(smooth))
        return -F.log_softmax(logits, dim=1).gather(1, self.targets[:, None])[:, 0]


def _blur(image: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    return F.conv2d(F.conv2d(padded, horizontal, groups=channels), vertical, groups=channels)
