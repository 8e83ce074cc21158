"""The `learned` detector: a small U-Net trained on synthetic damage over clean photos
(benchmarks/train_detector.py, weights in `pipeline/assets/`) scores each pixel.

Its coarsest level sees the photo at 1/8 scale, so each score weighs about 150 px of context:
a speck on a cheek stands alone, a star or a highlight sits among others like it, a tower's
edge runs on along a straight object boundary, a scratch crosses objects without regard for
them. It is scored in eight views (flips and quarter turns) and their scores averaged, each
view after the first only where it can still change the mask (`cascade_probability`).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from pipeline.detectors.maps import (
    DEFAULT_SENSITIVITY,
    hysteresis,
    in_bands,
    load_weights,
    odds_factor,
)

WEIGHTS_FILE = "damage_unet.npz"
# Bands bound the detector's memory on large scans (about TILE*TILE pixels at a time). The
# overlap exceeds the net's reach and bands start on its 8-px pooling grid, so banded and
# whole-frame masks agree.
TILE = 1024
TILE_OVERLAP = 96
GRID = 8
# The views the net scores a photo in, as (quarter turns, mirrored); their scores are averaged.
VIEWS = tuple((turns, flip) for turns in range(4) for flip in (False, True))


def build_net(widths: tuple[int, ...]):
    """The detector's architecture: a U-Net with one level per width (two 3x3 conv + batch
    norm + ReLU each), max-pooling down, nearest upsampling and skip connections up."""
    import torch
    from torch import nn

    def level(inputs: int, width: int):
        return nn.Sequential(
            nn.Conv2d(inputs, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.ModuleList(level(3 if i == 0 else widths[i - 1], w)
                                      for i, w in enumerate(widths))
            self.up = nn.ModuleList(level(widths[i] + widths[i + 1], widths[i])
                                    for i in range(len(widths) - 1))
            self.head = nn.Conv2d(widths[0], 1, 1)

        def forward(self, x):
            skips = []
            for index, block in enumerate(self.down):
                x = block(nn.functional.max_pool2d(x, 2) if index else x)
                skips.append(x)
            for index in reversed(range(len(self.up))):
                x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
                x = self.up[index](torch.cat([skips[index], x], 1))
            return self.head(x)

    return UNet()


def weights_id() -> str:
    """The identity of what decides the masks, recorded in params: the shipped net's file and
    how the cascade of views scores it (it moves a pixel or two), so that resume redoes photos
    when either changes."""
    cascade = (REGION_TILE, REGION_REACH, CROP_MARGIN, STRIP_TILES, FULL_FRAME_SHARE,
               COMPLETION_ROUNDS)
    digest = hashlib.sha256(f"{load_weights(WEIGHTS_FILE)['sha256']} cascade {cascade}".encode())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=4)
def load_net(device: str = "cpu"):
    """The shipped net on `device`, ready to score (one per device and process)."""
    return for_inference(net_from_weights(load_weights(WEIGHTS_FILE))).to(device)


def for_inference(net) -> Any:
    """`net` in eval mode with each batch norm folded into the convolution before it, its
    ReLUs in place and its weights channels-last: the same scores (to about 1e-4) at 1.2-2x
    less CPU time (more on larger bands), since normalising and copying cost nearly as much
    as convolving."""
    import torch
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = net.eval()
    for block in net.modules():
        if isinstance(block, nn.Sequential):
            for index in range(len(block) - 1):
                if isinstance(block[index], nn.Conv2d) and isinstance(block[index + 1],
                                                                       nn.BatchNorm2d):
                    block[index] = fuse_conv_bn_eval(block[index], block[index + 1])
                    block[index + 1] = nn.Identity()
                elif isinstance(block[index + 1], nn.ReLU):
                    block[index + 1] = nn.ReLU(inplace=True)
    return net.to(memory_format=torch.channels_last)


def net_from_weights(weights) -> Any:
    """A net built and loaded from saved arrays (the shipped file's, or a training run's)."""
    import torch

    net = build_net(tuple(int(width) for width in weights["widths"]))
    net.load_state_dict({name[len("net."):]: torch.from_numpy(weights[name])
                         for name in weights if name.startswith("net.")})
    return net


def net_input(pixels: np.ndarray) -> np.ndarray:
    """float32 3xHxW centred on 0 from a float image in [0, 1] (grey repeated)."""
    rgb = np.repeat(pixels[:, :, None], 3, 2) if pixels.ndim == 2 else pixels
    return np.ascontiguousarray(rgb.transpose(2, 0, 1) - 0.5, dtype=np.float32)


def damage_probability(pixels: np.ndarray, device: str = "cpu",
                       thresholds: tuple[float, float] | None = None) -> np.ndarray:
    """Per-pixel probability of damage (float32 HxW), in row bands to bound memory.

    With the hysteresis' `thresholds` (faint, sure), views after the first are scored only
    where they can change the mask (`cascade_probability`)."""
    band = band_rows(pixels.shape[1])
    net, views = load_net(device), shipped_views()
    if thresholds is None:
        return in_bands(pixels, band, TILE_OVERLAP,
                        lambda part: net_probability(net, part, device, views))
    faint, sure = thresholds
    return in_bands(pixels, band, TILE_OVERLAP, lambda part: cascade_probability(
        net, part, sure, faint, device, views))


def band_rows(width: int) -> int:
    """How many rows a band of a photo `width` px wide holds: about TILE * TILE pixels, on
    the pooling grid."""
    return max(GRID, TILE * TILE // max(width, 1) // GRID * GRID)


def shipped_views() -> tuple[tuple[int, bool], ...]:
    """The views the shipped net is scored in: all VIEWS, or the first `views` its file
    names (a net distilled from the VIEWS average scores as well in fewer)."""
    weights = load_weights(WEIGHTS_FILE)
    return VIEWS[:int(weights["views"])] if "views" in weights else VIEWS


def net_probability(net, pixels: np.ndarray, device: str = "cpu",
                    views: tuple[tuple[int, bool], ...] = VIEWS) -> np.ndarray:
    """`net`'s sigmoid over a whole (band of a) photo, padded to its pooling grid, averaged
    over `views`: damage has no preferred direction, and the average steadies a net this small
    on material unlike its training photos (one view flagged 0.73% of the undamaged benchmark
    photos, eight 0.49%, at 8x the cost)."""
    import torch

    height, width = pixels.shape[:2]
    with torch.inference_mode():
        batch = net_batch(pixels, device)
        total = sum(view_score(net, batch, view) for view in views)
    return (total / len(views))[0, 0].float().cpu().numpy()[:height, :width]


def net_batch(pixels: np.ndarray, device: str):
    """The photo as the net's 1x3xHxW input on `device`, padded to the pooling grid."""
    import torch

    height, width = pixels.shape[:2]
    pad = ((0, -height % GRID), (0, -width % GRID)) + ((0, 0),) * (pixels.ndim - 2)
    padded = np.pad(pixels, pad, mode="symmetric") if any(p[1] for p in pad) else pixels
    return torch.from_numpy(net_input(padded))[None].to(device)


def view_score(net, batch, view: tuple[int, bool]):
    """`net`'s sigmoid of `batch` seen in one view (quarter turns, mirrored), turned back."""
    import torch

    turns, flip = view
    seen = torch.rot90(batch, turns, (2, 3))
    score = torch.sigmoid(net(seen.flip(3) if flip else seen))
    return torch.rot90(score.flip(3) if flip else score, -turns, (2, 3))


# The cascade scores later views on tiles of REGION_TILE px (on the pooling grid) within
# REGION_REACH px of a pixel that may still be a seed, each group of tiles with CROP_MARGIN px
# of the photo around it as context. The net reaches ~50 px; with 40 px of context the masks
# of the detection benchmark's 18 photos differ from the eight views' everywhere by 1 px in
# all, and a real scratched print's (406 px flagged) by none; with 24, by 28 px and 21 (a
# defect's faint ends move). Groups are cut into strips
# of STRIP_TILES tile rows, so that a long diagonal scratch does not make one box the size of
# the photo; where the boxes' crops would cover FULL_FRAME_SHARE of the photo or more (small
# crops cost more per pixel), the view is scored on the whole photo instead.
REGION_TILE = 16
REGION_REACH = 4
CROP_MARGIN = 40
STRIP_TILES = 4
FULL_FRAME_SHARE = 0.35
COMPLETION_ROUNDS = 3


def cascade_probability(net, pixels: np.ndarray, seed_threshold: float,
                        faint_threshold: float, device: str = "cpu",
                        views: tuple[tuple[int, bool], ...] = VIEWS) -> np.ndarray:
    """The `views` average where it can decide the mask, each view after the first scored
    only where the average may still reach `seed_threshold` (the hysteresis' sure level, which
    a defect must reach somewhere to be flagged at all): after k of n views summing to s it
    can only if s + (n - k) >= n * seed_threshold, as no view scores above 1. Near the
    calibrated threshold few pixels pass, so a photo with sparse damage costs little more than
    one view; elsewhere the map holds the average of the views scored, and every pixel the
    hysteresis (`faint_threshold`, `seed_threshold`) then flags, with its neighbours, is scored
    in all views. Above sensitivity ~0.6 the bound passes nearly every pixel and all views are
    scored everywhere."""
    import torch

    height, width = pixels.shape[:2]
    with torch.inference_mode():
        batch = net_batch(pixels, device)
        total = view_score(net, batch, views[0])[0, 0].float().cpu().numpy()
    count = np.ones(total.shape, np.float32)
    region = np.ones(total.shape, bool)
    for scored in range(1, len(views)):
        # Every pixel of `region` has been scored in all `scored` views so far.
        may_seed = region & (total + (len(views) - scored) >= len(views) * seed_threshold)
        if not may_seed.any():
            break
        region = add_view(net, batch, views, scored, region & grown_to_tiles(may_seed), total,
                          count)
    average = total / count
    # A flagged defect's faint surroundings (the hysteresis' low level) may reach pixels
    # scored in fewer views: score those (and their neighbours) in all, until none is left.
    for _ in range(COMPLETION_ROUNDS):
        flagged = hysteresis(average, faint_threshold, seed_threshold)
        missing = grown_to_tiles(flagged) & (count < len(views))
        if not missing.any():
            break
        # A pixel scored in `count` views lacks views[count:].
        for index in range(1, len(views)):
            if (missing & (count == index)).any():
                add_view(net, batch, views, index, missing & (count == index), total, count)
        average = total / count
    return average[:height, :width]


def add_view(net, batch, views, index: int, wanted: np.ndarray, total: np.ndarray,
             count: np.ndarray) -> np.ndarray:
    """Score views[index] over `wanted` (or the whole photo, see `region_score`) and add it to
    `total` and `count` of every pixel it covers that holds views[:index]; returns those."""
    scores, covered = region_score(net, batch, wanted, views[index])
    gained = covered & (count == index)
    total[gained] += scores[gained]
    count[gained] += 1
    return gained


def grown_to_tiles(pixels: np.ndarray) -> np.ndarray:
    """The REGION_TILE tiles within REGION_REACH px of any of `pixels`, as a pixel mask."""
    near = cv2.dilate(pixels.astype(np.uint8), np.ones((2 * REGION_REACH + 1,) * 2, np.uint8))
    rows, cols = -(-near.shape[0] // REGION_TILE), -(-near.shape[1] // REGION_TILE)
    padded = np.zeros((rows * REGION_TILE, cols * REGION_TILE), np.uint8)
    padded[:near.shape[0], :near.shape[1]] = near
    tiles = padded.reshape(rows, REGION_TILE, cols, REGION_TILE).max((1, 3))
    grown = np.kron(tiles, np.ones((REGION_TILE, REGION_TILE), np.uint8))
    return grown[:near.shape[0], :near.shape[1]] > 0


def region_score(net, batch, region: np.ndarray,
                 view: tuple[int, bool]) -> tuple[np.ndarray, np.ndarray]:
    """One view's scores (HxW) and where they hold: over `region`, box by box, each from a
    crop of the photo CROP_MARGIN px wider on every side; or over the whole photo where the
    crops would cover much of it anyway (small crops cost more per pixel)."""
    import torch

    height, width = region.shape
    crops = [(box, crop_of(box, height, width)) for box in region_boxes(region)]
    crop_area = sum((c[0].stop - c[0].start) * (c[1].stop - c[1].start) for _, c in crops)
    with torch.inference_mode():
        if crop_area >= FULL_FRAME_SHARE * height * width:
            whole = view_score(net, batch, view)[0, 0].float().cpu().numpy()
            return whole, np.ones(region.shape, bool)
        out = np.zeros(region.shape, np.float32)
        for box, crop in crops:
            score = view_score(net, batch[:, :, crop[0], crop[1]], view)[0, 0]
            inner = (slice(box[0].start - crop[0].start, box[0].stop - crop[0].start),
                     slice(box[1].start - crop[1].start, box[1].stop - crop[1].start))
            out[box] = score[inner].float().cpu().numpy()
    return out, region


def region_boxes(region: np.ndarray) -> list[tuple[slice, slice]]:
    """The bounding boxes of `region`'s connected groups of tiles, each within a strip of
    STRIP_TILES tile rows. Boxes may overlap; each covers its own group whole."""
    strip = STRIP_TILES * REGION_TILE
    boxes = []
    for top in range(0, region.shape[0], strip):
        part = region[top:top + strip].astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(part, connectivity=8)
        boxes += [(slice(top + y, top + y + h), slice(x, x + w))
                  for x, y, w, h in stats[1:count, :4]]
    return boxes


def crop_of(box: tuple[slice, slice], height: int, width: int) -> tuple[slice, slice]:
    """`box` with CROP_MARGIN px more on every side, within the photo. Tiles and margin are
    multiples of the pooling grid, so the net pools the crop as it pools the frame."""
    return (slice(max(0, box[0].start - CROP_MARGIN), min(height, box[0].stop + CROP_MARGIN)),
            slice(max(0, box[1].start - CROP_MARGIN), min(width, box[1].stop + CROP_MARGIN)))


def shifted(threshold: float, sensitivity: float) -> float:
    """A calibrated probability threshold moved by sensitivity (`odds_factor`)."""
    odds = threshold / (1 - threshold) * odds_factor(sensitivity)
    return odds / (1 + odds)


def damage_mask(pixels: np.ndarray, sensitivity: float = DEFAULT_SENSITIVITY,
                device: str = "cpu") -> np.ndarray:
    """Pixels the net scores above the calibrated threshold, with their faint surroundings
    (hysteresis: the blurred ends and fringes of a sure defect stay with it)."""
    high = shifted(float(load_weights(WEIGHTS_FILE)["threshold"]), sensitivity)
    probability = damage_probability(pixels, device, thresholds=(high / 2, high))
    return without_picture_lines(hysteresis(probability, high / 2, high))


# A ruler-straight line this long is a wire, a mast, a horizon or a building's edge far more
# often than a scratch: scratches on prints wander. A flagged part is taken for the picture
# when PICTURE_LINE_LENGTH px of its skeleton or more lie within PICTURE_LINE_DEVIATION px of
# one line and make up PICTURE_LINE_SHARE of it (a mast keeps its braces and joined specks).
# Of 5000 synthetic scratches (drawn to look like a print's, 77-307 px long) one passes; the
# net, which sees about 150 px around a pixel, cannot judge this itself.
PICTURE_LINE_LENGTH = 128
PICTURE_LINE_DEVIATION = 1.5
PICTURE_LINE_SHARE = 0.8


def without_picture_lines(mask: np.ndarray) -> np.ndarray:
    """`mask` less its connected parts that are long, ruler-straight lines."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    straight = np.zeros(count, bool)
    for index in range(1, count):
        x, y, w, h = stats[index, :4]
        # Skip the skeleton where it cannot pass: a thin line of PICTURE_LINE_LENGTH px spans
        # nearly that much along its box's long side (0.7 leaves room for side pixels).
        if max(w, h) >= PICTURE_LINE_LENGTH * 0.7:
            straight[index] = is_straight_line(labels[y:y + h, x:x + w] == index)
    return mask & ~straight[labels] if straight.any() else mask


def is_straight_line(component: np.ndarray) -> bool:
    """Whether the component's skeleton is mostly one long straight line, by a robust (Huber)
    fit that braces and specks joined to it do not bend."""
    from skimage.morphology import skeletonize

    points = np.argwhere(skeletonize(component)).astype(np.float32)
    if len(points) < PICTURE_LINE_LENGTH:
        return False
    direction_y, direction_x, centre_y, centre_x = cv2.fitLine(points, cv2.DIST_HUBER, 0, 0.01,
                                                               0.01).ravel()
    offsets = points - [centre_y, centre_x]
    deviation = np.abs(offsets[:, 0] * direction_x - offsets[:, 1] * direction_y)
    on_line = deviation <= PICTURE_LINE_DEVIATION
    return bool(on_line.sum() >= PICTURE_LINE_LENGTH and on_line.mean() >= PICTURE_LINE_SHARE)
