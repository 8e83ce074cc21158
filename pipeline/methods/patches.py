"""`patch`: holes rebuilt from the photo's own patches (multi-scale PatchMatch and voting).

Role: the patch-based synthesis behind content-aware fill, as a classical-style comparison
row (`patch`) and as the starting fill of the optimiser's wide holes (`init="patch"` in
pipeline.methods.hallucinate). Smooth fills (biharmonic, FSR) leave wide holes as smears
because nothing carries texture to their middle; here every hole pixel is copied from intact
patches of the same photo, so grain, weave and edges reach it.

How (Wexler, Shechtman & Irani 2007; Barnes et al.'s PatchMatch 2009), coarse to fine over
an image pyramid: at the coarsest level the hole starts from the biharmonic fill; at each
level, a few EM steps alternate a nearest-neighbour search (every patch that touches the
hole finds an intact `patch_size` square of the photo) with a vote (each hole pixel becomes
the mean of what the overlapping patches' matches put there, each patch weighted `falloff`
** -depth of its centre in the hole, so patches anchored on known pixels decide: 1.3 chosen
on held-out half A of benchmarks/quality.py over 1.0, and 7 px patches over 5 and 9). The
search is PatchMatch made parallel for numpy: random start (or the coarser level's field,
scaled up), jump-flood propagation (a patch tries its neighbour's match shifted back, at
jumps 8, 4, 2, 1 px, all patches at once) and random search in shrinking windows. Patches
are compared on their low-frequency cosine coefficients (`Basis`): a 7x7x3 patch is 147
numbers, and 21 of them carry nearly all of the difference between natural patches. A basis
measured per photo (PCA) was tried first: its eigen-decomposition alone took 0.2-0.6 s on
the shared cores (threaded LAPACK waiting for busy cores), more than the whole search.

Float HxWxC crops, C 1 or 3 (`Canvas` hands gray and toned prints over as luminance); the
method's seed decides every random draw; known pixels are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field, field_validator

from pipeline.methods.base import Fill, Method, MethodParams
from pipeline.methods.classical import biharmonic_fill

# Jumps of the parallel propagation, as in jump flooding: a match travels 15 px in a round.
JUMPS = (8, 4, 2, 1)
# A pyramid level needs at least this many intact patches to search among.
MIN_SOURCES = 64


class NoIntactPatch(ValueError):
    """No intact patch is left to copy from: the holes touch every patch_size square."""


@dataclass(frozen=True)
class Synthesis:
    """Settings of one patch synthesis (shared by the `patch` method and `init="patch"`)."""

    patch_size: int = 7
    em_steps: int = 3
    coarsest_em_steps: int = 6
    rounds: int = 2
    falloff: float = 1.3


class PatchParams(MethodParams):
    patch_size: int = Field(default=Synthesis.patch_size, ge=3, le=15, description="Side "
                            "(px, odd) of the patches searched and copied.")
    em_steps: int = Field(default=Synthesis.em_steps, ge=1, description="Search-and-vote "
                          "steps per pyramid level (the coarsest gets `coarsest_em_steps`).")
    coarsest_em_steps: int = Field(default=Synthesis.coarsest_em_steps, ge=1)
    rounds: int = Field(default=Synthesis.rounds, ge=1, description="PatchMatch rounds "
                        "(propagation then random search) per search.")
    falloff: float = Field(default=Synthesis.falloff, ge=1, description="A patch's vote "
                           "weighs falloff ** -(its centre's depth in the hole, px): above 1, "
                           "patches anchored on known pixels decide (Wexler et al.); 1: "
                           "every vote counts alike.")

    @field_validator("patch_size")
    @classmethod
    def _odd(cls, size: int) -> int:
        if size % 2 == 0:
            raise ValueError(f"patch_size must be odd (a patch has a centre pixel), not {size}")
        return size

    def synthesis(self) -> Synthesis:
        return Synthesis(self.patch_size, self.em_steps, self.coarsest_em_steps, self.rounds,
                         self.falloff)


class PatchSynthesis(Method):
    """Multi-scale PatchMatch with voting: holes filled with the photo's own patches."""

    name = "patch"
    Params = PatchParams

    def fill(self, image: np.ndarray, mask: np.ndarray) -> Fill:
        return Fill(patch_fill(image, mask, self.seed, self.params.synthesis()))


def patch_fill(image: np.ndarray, mask: np.ndarray, seed: int = 0,
               settings: Synthesis = Synthesis()) -> np.ndarray:
    """Fill `mask` (bool HxW, True = hole) of `image` (float32 HxWxC in [0, 1]) from its own
    patches; returns float32 HxWxC with every known pixel as it was."""
    if not mask.any():
        return image.astype(np.float32)
    size = settings.patch_size
    if min(mask.shape) < size:
        raise ValueError(f"the crop {mask.shape} is smaller than one {size}x{size} patch")
    rng = np.random.default_rng(seed)
    levels = [Level(*pair, size, settings.falloff)
              for pair in pyramid(image.astype(np.float32), mask, size)]
    basis = Basis(size, image.shape[2])
    coarsest = levels[-1]
    estimate = np.where(coarsest.mask[:, :, None],
                        biharmonic_fill(coarsest.image, coarsest.mask), coarsest.image)
    coarsest.describe_sources(estimate, basis)
    field = coarsest.random_field(rng)
    steps = settings.coarsest_em_steps
    for depth in range(len(levels) - 1, -1, -1):
        level = levels[depth]
        if depth < len(levels) - 1:
            field = level.upsampled(levels[depth + 1], field, rng)
            estimate = level.vote(field)
            level.describe_sources(estimate, basis)
            steps = settings.em_steps
        for _ in range(steps):
            field = level.search(estimate, field, settings.rounds, rng)
            estimate = level.vote(field)
    return np.where(mask[:, :, None], estimate, image).astype(np.float32)


def pyramid(image: np.ndarray, mask: np.ndarray, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, hole) from fine to coarse, halving until the widest hole is about a patch
    wide, while each level keeps enough intact patches to copy from."""
    levels = [(image, mask)]
    while hole_radius(levels[-1][1]) > size:
        smaller = downsample(*levels[-1])
        if min(smaller[1].shape) < 3 * size or intact_centres(smaller[1], size).sum() < MIN_SOURCES:
            break
        levels.append(smaller)
    return levels


def hole_radius(mask: np.ndarray) -> float:
    """Largest distance (px) from a hole pixel to the nearest known one."""
    return float(cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5).max())


def downsample(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half size; a coarse pixel is known only when every fine pixel under it is, and its
    value is the mean of known pixels alone (damaged values never leak into the sources)."""
    shape = ((mask.shape[1] + 1) // 2, (mask.shape[0] + 1) // 2)
    known = (~mask).astype(np.float32)
    weight = cv2.resize(known, shape, interpolation=cv2.INTER_AREA)
    summed = cv2.resize(image * known[:, :, None], shape, interpolation=cv2.INTER_AREA)
    summed = summed.reshape(weight.shape + (image.shape[2],))
    small = summed / np.maximum(weight, 1e-6)[:, :, None]
    return small.astype(np.float32), weight < 1 - 1e-4


def intact_centres(mask: np.ndarray, size: int) -> np.ndarray:
    """Centres of the size x size squares that lie inside the frame and hold no hole pixel."""
    known = cv2.erode((~mask).astype(np.uint8), np.ones((size, size), np.uint8),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return known.astype(bool)


# The opponent colour axes (orthonormal, so distances stay sums of squared differences):
# luminance first, then two chroma axes that carry less detail.
OPPONENT = np.array([[1, 1, 1], [1, -1, 0], [1, 1, -2]], np.float32) / np.sqrt(
    np.array([[3], [2], [6]], np.float32))
# Cosine frequencies (u + v at most this) patches are compared on: luminance, chroma.
LUMINANCE_BAND, CHROMA_BAND = 4, 1


@dataclass(frozen=True)
class Basis:
    """What patches are compared on: their low-frequency 2-D cosine coefficients (an
    orthonormal DCT-II, the fixed near-optimum of a photo's principal components), 15 of the
    luminance and 3 of each chroma axis. Fixed, so nothing is measured per photo, and
    separable, so every pixel's patch is described by 1-D filters."""

    size: int
    channels: int

    def components(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(opponent channel, vertical kernel, horizontal kernel) per coefficient."""
        positions = np.arange(self.size)
        cosines = [np.cos(np.pi * (positions + 0.5) * u / self.size) for u in range(self.size)]
        cosines = [(c / np.linalg.norm(c)).astype(np.float32) for c in cosines]
        bands = [LUMINANCE_BAND] + [CHROMA_BAND] * (self.channels - 1)
        return [(channel, cosines[u], cosines[v]) for channel, band in enumerate(bands)
                for u in range(band + 1) for v in range(band + 1 - u)]

    def describe(self, image: np.ndarray) -> np.ndarray:
        """Every pixel's patch, described: (H * W, coefficients) float32."""
        opponent = image if self.channels == 1 else cv2.transform(image, OPPONENT)
        opponent = opponent.reshape(image.shape)
        parts = [cv2.sepFilter2D(np.ascontiguousarray(opponent[:, :, channel]), cv2.CV_32F,
                                 horizontal, vertical, borderType=cv2.BORDER_REFLECT)
                 for channel, vertical, horizontal in self.components()]
        return np.stack(parts, axis=-1).reshape(-1, len(parts))


class Level:
    """One pyramid level: the patches that touch the hole (targets), the intact ones
    (sources) with their descriptors, and the search and vote between them. Positions are
    flat indices (row * width + column)."""

    def __init__(self, image: np.ndarray, mask: np.ndarray, size: int, falloff: float = 1.0):
        self.image, self.mask, self.size = image, mask, size
        self.radius = r = size // 2
        height, width = mask.shape
        interior = np.zeros_like(mask)
        interior[r:height - r, r:width - r] = True
        sources = intact_centres(mask, size) & interior
        if not sources.any():
            raise NoIntactPatch(f"no intact {size}x{size} patch is left to copy from: the "
                                "holes touch every one")
        self.source_flat = np.flatnonzero(sources)
        self.source_id = np.full(mask.size, -1, np.int64)
        self.source_id[self.source_flat] = np.arange(self.source_flat.size)
        # Every patch with a hole pixel, its centre kept inside the frame: centres clipped
        # to the interior still cover the hole pixels along the frame's edge.
        touching = cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8)) > 0
        self.target_flat = np.flatnonzero(touching & interior)
        self.target_id = np.full(mask.size, -1, np.int64)
        self.target_id[self.target_flat] = np.arange(self.target_flat.size)
        self.neighbours = {step: self._neighbours(*step) for jump in JUMPS for step in
                           ((jump, 0), (-jump, 0), (0, jump), (0, -jump))}
        self._vote_pairs(falloff)

    def _neighbours(self, step_y: int, step_x: int) -> tuple[np.ndarray, np.ndarray]:
        """(targets, their neighbouring target `step` away) for every target that has one."""
        height, width = self.mask.shape
        near_y = self.target_flat // width + step_y
        near_x = self.target_flat % width + step_x
        inside = np.flatnonzero((near_y >= 0) & (near_y < height) & (near_x >= 0)
                                & (near_x < width))
        neighbour = self.target_id[near_y[inside] * width + near_x[inside]]
        return inside[neighbour >= 0], neighbour[neighbour >= 0]

    def _vote_pairs(self, falloff: float) -> None:
        """The (hole pixel, covering target, offset in the patch) triples of the vote, and
        each target's weight."""
        r, height, width = self.radius, *self.mask.shape
        self.hole_flat = np.flatnonzero(self.mask)
        hole_y, hole_x = self.hole_flat // width, self.hole_flat % width
        pixels, targets, offsets = [], [], []
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                centre_y, centre_x = hole_y - dy, hole_x - dx
                inside = np.flatnonzero((centre_y >= 0) & (centre_y < height)
                                        & (centre_x >= 0) & (centre_x < width))
                ids = self.target_id[centre_y[inside] * width + centre_x[inside]]
                pixels.append(inside[ids >= 0])
                targets.append(ids[ids >= 0])
                offsets.append(np.full(pixels[-1].size, dy * width + dx, np.int64))
        self.vote_pixel = np.concatenate(pixels)
        self.vote_target = np.concatenate(targets)
        self.vote_offset = np.concatenate(offsets)
        depth = cv2.distanceTransform(self.mask.astype(np.uint8), cv2.DIST_L2, 5).ravel()
        self.vote_weight = falloff ** -depth[self.target_flat][self.vote_target].astype(np.float64)
        self.vote_total = np.bincount(self.vote_pixel, weights=self.vote_weight,
                                      minlength=self.hole_flat.size)

    def describe_sources(self, estimate: np.ndarray, basis: Basis) -> None:
        self.basis = basis
        self.source_descriptor = basis.describe(estimate)[self.source_flat]

    def random_field(self, rng: np.random.Generator) -> np.ndarray:
        """Each target's match: a source id drawn at random."""
        return rng.integers(0, self.source_flat.size, self.target_flat.size)

    def upsampled(self, coarser: Level, field: np.ndarray, rng: np.random.Generator
                  ) -> np.ndarray:
        """The coarser level's matches scaled up (a target inherits the match of the coarse
        patch it lies in, shifted by its place in it); random where that lands nowhere."""
        width, coarse_height, coarse_width = self.mask.shape[1], *coarser.mask.shape
        target_y, target_x = self.target_flat // width, self.target_flat % width
        coarse_y = np.minimum(target_y // 2, coarse_height - 1)
        coarse_x = np.minimum(target_x // 2, coarse_width - 1)
        parent = coarser.target_id[coarse_y * coarse_width + coarse_x]
        inherited = self.random_field(rng)
        has = np.flatnonzero(parent >= 0)
        match = coarser.source_flat[field[parent[has]]]
        source_y = 2 * (match // coarse_width) + target_y[has] - 2 * coarse_y[has]
        source_x = 2 * (match % coarse_width) + target_x[has] - 2 * coarse_x[has]
        ids = self._source_at(source_y, source_x)
        inherited[has[ids >= 0]] = ids[ids >= 0]
        return inherited

    def _source_at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Source ids at (ys, xs), clipped to the frame; -1 where that is no intact patch."""
        height, width = self.mask.shape
        return self.source_id[np.clip(ys, 0, height - 1) * width + np.clip(xs, 0, width - 1)]

    def search(self, estimate: np.ndarray, field: np.ndarray, rounds: int,
               rng: np.random.Generator) -> np.ndarray:
        """PatchMatch against the current estimate: propagation, then random search."""
        targets = self.basis.describe(estimate)[self.target_flat]
        cost = self._cost(targets, slice(None), field)
        field = field.copy()
        for _ in range(rounds):
            for step, (which, neighbour) in self.neighbours.items():
                self._propagate(targets, field, cost, which, neighbour, step)
            self._random_search(targets, field, cost, rng)
        return field

    def _cost(self, targets: np.ndarray, which, ids: np.ndarray) -> np.ndarray:
        difference = targets[which] - self.source_descriptor[ids]
        return np.einsum("ij,ij->i", difference, difference)

    def _try(self, targets, field, cost, which: np.ndarray, ids: np.ndarray) -> None:
        """Take the candidate sources `ids` for targets `which` where they match better."""
        # Coherent regions mostly propose the match a target already has: skip those.
        fresh = (ids >= 0) & (ids != field[which])
        which, ids = which[fresh], ids[fresh]
        candidate = self._cost(targets, which, ids)
        better = candidate < cost[which]
        field[which[better]] = ids[better]
        cost[which[better]] = candidate[better]

    def _propagate(self, targets, field, cost, which, neighbour, step) -> None:
        """Each target tries its neighbour's (`step` away) match, shifted back."""
        # A shift off the intact area reads -1; one past the frame's edge wraps to another
        # row's source, which is only one more candidate to judge.
        shifted = self.source_flat[field[neighbour]] - (step[0] * self.mask.shape[1] + step[1])
        ids = self.source_id[np.clip(shifted, 0, self.mask.size - 1)]
        self._try(targets, field, cost, which, ids)

    def _random_search(self, targets, field, cost, rng: np.random.Generator) -> None:
        """Candidates around each current match in windows halving from the frame's size."""
        width = self.mask.shape[1]
        window = float(max(self.mask.shape))
        which = np.arange(field.size)
        while window >= 1:
            match = self.source_flat[field]
            jitter = np.rint(rng.uniform(-window, window, (2, field.size))).astype(np.int64)
            ids = self._source_at(match // width + jitter[0], match % width + jitter[1])
            self._try(targets, field, cost, which, ids)
            window /= 2

    def vote(self, field: np.ndarray) -> np.ndarray:
        """Each hole pixel: the weighted mean of what the patches covering it copy there."""
        channels = self.image.shape[2]
        pixels = self.image.reshape(-1, channels)
        copied = pixels[self.source_flat[field[self.vote_target]] + self.vote_offset]
        estimate = self.image.copy()
        filled = estimate.reshape(-1, channels)
        for channel in range(channels):
            summed = np.bincount(self.vote_pixel, weights=copied[:, channel] * self.vote_weight,
                                 minlength=self.hole_flat.size)
            filled[self.hole_flat, channel] = summed / self.vote_total
        return estimate
