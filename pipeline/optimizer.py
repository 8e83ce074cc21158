"""The optimisation core: hole pixels descend a weighted sum of objective terms.

Terms: the seed's hallucination term (a class score of the prior network), isotropic total
variation with a beta exponent, and a deep-feature patch context term (neural patch
synthesis). Known pixels are constants, never parameters. Coarse-to-fine octaves, early
stopping on a plateau, an iteration cap and a wall-clock deadline; CPU runs are seeded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.prior import Prior


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
    deadline: float | None = None  # a time.perf_counter() value


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
) -> Outcome:
    """Descend from `image` (float32 HxWxC in [0, 1], holes already filled by an initial
    fill) changing only pixels where `hole` (bool HxW) is True; coarse octaves first.

    Each octave's change, not its image, is carried up to full resolution: the fine
    texture of the initial fill survives, and the coarse octaves are a smooth
    parameterisation of the update (and four times cheaper per level).
    """
    generator = torch.Generator().manual_seed(seed)
    current = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)
    full_hole = torch.from_numpy(hole)[None, None].to(device)
    iterations, loss, stopped = 0, None, "cap"
    for octave in reversed(range(schedule.finest, max(schedule.octaves, schedule.finest + 1))):
        base, coarse_hole = _downscale(current, full_hole, 2**octave)
        if not coarse_hole.any():
            continue
        result, steps, loss, stopped = _descend(base, coarse_hole, prior, weights, schedule,
                                                generator)
        iterations += steps
        change = result - base
        if octave:
            change = F.interpolate(change, size=current.shape[-2:], mode="bilinear",
                                   align_corners=False)
        current = torch.where(full_hole, (current + change).clamp(0, 1), current)
        if stopped == "budget":
            break
    pixels = current[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
    return Outcome(pixels, iterations, loss, stopped)


def _downscale(image: torch.Tensor, hole: torch.Tensor, factor: int):
    if factor == 1:
        return image, hole
    size = (max(8, image.shape[-2] // factor), max(8, image.shape[-1] // factor))
    small = F.interpolate(image, size=size, mode="area")
    # A coarse pixel is known only if none of the pixels it averages is a hole.
    small_hole = F.interpolate(hole.float(), size=size, mode="area") > 0
    return small, small_hole


def _descend(base, hole, prior, weights, schedule, generator):
    """Adam on the hole pixels of one octave; returns (image, steps, loss, why it stopped)."""
    keep = (~hole).float()
    known = base * keep
    parameter = base.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([parameter], lr=schedule.lr)
    context = (ContextTerm(prior, hole, generator, weights.context_depth)
               if weights.context > 0 and prior is not None else None)
    hallucination = (HallucinationTerm(prior, base, generator)
                     if weights.hallucination > 0 and prior is not None else None)
    history: list[float] = []
    stopped, step = "cap", 0
    for step in range(1, schedule.steps + 1):
        image = known + parameter * (1 - keep)
        terms = weights.tv * tv_loss(image, hole, weights.tv_beta)
        if context is not None:
            if (step - 1) % schedule.rematch_every == 0:
                context.rematch(image)
            seen = _smooth_gradient(image, weights.gradient_blur)
            terms = terms + weights.context * context.loss(seen)
        optimizer.zero_grad()
        if hallucination is not None:
            parameter.grad = _normalised_sum(terms, hallucination.loss(image), parameter,
                                             weights.hallucination)
        else:
            terms.backward()
        optimizer.step()
        with torch.no_grad():
            parameter.clamp_(0, 1)
        history.append(float(terms.detach()))
        if _plateau(history, schedule.patience, schedule.tolerance):
            stopped = "plateau"
            break
        if schedule.deadline is not None and time.perf_counter() > schedule.deadline:
            stopped = "budget"
            break
    with torch.no_grad():
        result = known + parameter.detach() * (1 - keep)
    return result, step, history[-1] if history else None, stopped


def _smooth_gradient(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Same forward value, blurred backward: a network's gradient reaches the pixels
    smoothed, so it cannot paint pixel-scale speckle (a smoother parameterisation)."""
    if sigma <= 0:
        return image
    blurred = _blur(image, sigma)
    return image.detach() + blurred - blurred.detach()


def _normalised_sum(terms, hallucination, parameter, weight):
    """Gradient of `terms` plus the hallucination gradient scaled to `weight` times its norm.

    A classifier's raw gradient is tiny in some places and huge in others; normalising it
    makes the weight mean the same thing on every photo and every octave.
    """
    (rest,) = torch.autograd.grad(terms, parameter, retain_graph=True)
    (push,) = torch.autograd.grad(hallucination, parameter)
    scale = rest.norm() / (push.norm() + 1e-12)
    return rest + weight * scale * push


def _plateau(history: list[float], patience: int, tolerance: float) -> bool:
    """True when the loss fell by less than `tolerance` (relative) over `patience` steps."""
    if len(history) <= patience:
        return False
    before, now = history[-patience - 1], history[-1]
    return before - now < tolerance * abs(before)


def tv_loss(image: torch.Tensor, hole: torch.Tensor, beta: float) -> torch.Tensor:
    """Isotropic colour TV, (|dx|^2 + |dy|^2)^(beta/2), over pixels touching the hole."""
    dx = F.pad(image[..., :, 1:] - image[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(image[..., 1:, :] - image[..., :-1, :], (0, 0, 0, 1))
    magnitude = (dx**2 + dy**2).sum(1, keepdim=True) + 1e-6
    near = F.max_pool2d(hole.float(), 3, stride=1, padding=1)
    return (magnitude ** (beta / 2) * near).sum() / hole.sum().clamp(min=1)


class ContextTerm:
    """Pull each deep-feature patch in the hole toward its nearest patch outside it.

    3x3 patches of the prior's features at strides 4 and 8, compared by cosine; nearest
    neighbours are found again every few steps, as in neural patch synthesis (Yang et al.,
    CVPR 2017). Only patches wholly outside the hole serve as exemplars.
    """

    max_exemplars = 2048

    def __init__(self, prior: Prior, hole: torch.Tensor, generator: torch.Generator,
                 depth: int = 2):
        self.prior = prior
        self.depth = depth
        self.hole = hole
        self.generator = generator
        self.targets: list[torch.Tensor | None] = []
        self.hole_cells: list[torch.Tensor] = []

    def _patches(self, image: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(unit patches K*9 x cells, hole cells bool) for each feature tap."""
        found = []
        for features in self.prior.features(self.prior.normalize(image), self.depth):
            size = features.shape[-2:]
            cells = F.interpolate(self.hole.float(), size=size, mode="area")[0, 0] > 0
            patches = F.unfold(features, 3, padding=1)[0]
            found.append((F.normalize(patches, dim=0), cells))
        return found

    def rematch(self, image: torch.Tensor) -> None:
        self.targets, self.hole_cells = [], []
        with torch.no_grad():
            for patches, cells in self._patches(image):
                outside = F.max_pool2d(cells[None, None].float(), 3, 1, 1)[0, 0] == 0
                inside = cells.flatten()
                candidates = torch.nonzero(outside.flatten()).flatten()
                if candidates.numel() == 0 or not inside.any():
                    self.targets.append(None)
                    self.hole_cells.append(inside)
                    continue
                if candidates.numel() > self.max_exemplars:
                    pick = torch.randperm(candidates.numel(), generator=self.generator)
                    candidates = candidates[pick[: self.max_exemplars].to(candidates.device)]
                exemplars = patches[:, candidates]
                queries = patches[:, inside]
                nearest = (queries.T @ exemplars).argmax(dim=1)
                self.targets.append(exemplars[:, nearest])
                self.hole_cells.append(inside)

    def loss(self, image: torch.Tensor) -> torch.Tensor:
        total = image.new_zeros(())
        for (patches, _), target, inside in zip(self._patches(image), self.targets,
                                                self.hole_cells, strict=True):
            if target is not None:
                total = total + (1 - (patches[:, inside] * target).sum(0)).mean()
        return total


class HallucinationTerm:
    """The seed's term: raise the class score the network gives the photo around the hole.

    Remedies against the adversarial pattern a classifier's gradient is: the class is
    the one the network sees in the initial fill (fixed), the view is a jittered copy at
    the network's working resolution, and the gradient reaching the pixels is blurred
    (a smoother parameterisation), besides the octaves and gradient normalisation.
    """

    view_size = 224
    jitter = 8

    def __init__(self, prior: Prior, base: torch.Tensor, generator: torch.Generator):
        self.prior = prior
        self.generator = generator
        with torch.no_grad():
            self.target = int(self.prior.logits(self._view(base, jitter=False)).argmax())

    def _view(self, image: torch.Tensor, jitter: bool = True) -> torch.Tensor:
        scale = self.view_size / max(image.shape[-2:])
        if scale < 1:
            size = tuple(max(32, round(side * scale)) for side in image.shape[-2:])
            image = F.interpolate(image, size=size, mode="bilinear", antialias=True,
                                  align_corners=False)
        if jitter:
            dy, dx = torch.randint(-self.jitter, self.jitter + 1, (2,), generator=self.generator)
            image = torch.roll(image, (int(dy), int(dx)), dims=(-2, -1))
        return self.prior.normalize(image)

    def loss(self, image: torch.Tensor) -> torch.Tensor:
        # Same forward value, blurred backward: the gradient w.r.t. pixels is smoothed.
        smooth = image.detach() + _blur(image) - _blur(image).detach()
        logits = self.prior.logits(self._view(smooth))
        return -F.log_softmax(logits, dim=1)[0, self.target]


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
