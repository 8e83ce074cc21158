"""The print's own edge in a scan cropped tight to it: a dark line (the print's edge, its shadow
or a border line) that runs along a side of the scan within its outer few pixels. It is picture
of the scan, not damage of the print, and detectors that see a thin dark defect there flag it.

Damage along a print's edge is patchy (chips, worn corners, cracks that reach the edge), and it
is mostly lighter than the print (paper shows). So a side is taken for a print's edge when the
dark flagged defects lying within its outer BAND px cover at least COVER of its length; what is
flagged in that band is then unflagged, with the slivers of the line that stray past it, but not
the creases and cracks that run in from it. On other sides a worn edge, light, stays.
"""

from __future__ import annotations

import cv2
import numpy as np

# How far in from a side the print's edge lies on a tight scan (px of the photo detection
# runs on), and what share of a defect's pixels must lie that close to count as along it.
BAND = 10
IN_BAND = 0.8
# How deep a defect cut at the band may reach and still be taken for part of the edge line.
SLIVER = 2 * BAND
# Share of a side's length that dark defects along it must cover. At the most of `verified`'s
# sensitivities 0.7-1.0: on the four real prints (benchmarks/real) the two sides of the tight
# scan (c) are covered 0.59 and 0.92, every other side at most 0.06; every side of the twelve
# synthetic benchmark prints (benchmarks/detect.py --damage print) at most 0.08.
COVER = 0.4
# Dark or light against the picture just inside the band: per position along a side, the
# median of the strip INNER px further in, smoothed along the side over ALONG px. (A median
# window around the defect would, at the frame, see mostly the defect and the frame's
# replicated pixels: a light worn edge came out dark beside a bright sky.)
INNER = 20
ALONG = 21
SIDES = ("top", "bottom", "left", "right")


def edge_sides(masks: list[np.ndarray], gray: np.ndarray) -> list[str]:
    """The SIDES along which dark defects of any of `masks` (HxW bool: one photo flagged at
    several thresholds) cover at least COVER of the side's length: a print's edge; `gray` is
    the photo's luminance (HxW, 8-bit levels). Several thresholds, because at one of them an
    edge line may have merged with a defect further in."""
    if min(gray.shape) < 2 * (BAND + INNER):
        return []
    inner = inner_levels(gray)
    covers = [dark_cover(mask, gray, inner) for mask in masks]
    return [side for side in SIDES if max(cover[side] for cover in covers) >= COVER]


def along_sides(mask: np.ndarray, sides: list[str]) -> np.ndarray:
    """The pixels of `mask` along `sides` (HxW bool): those within BAND px of one, dark or
    light (beyond a print's edge line lies the scanner's lid), and what is left of a defect
    cut there that reaches no further than SLIVER px in from that side (a wavering edge line).
    A crease or crack that runs in from the edge keeps all of itself beyond the band."""
    if not sides:
        return np.zeros_like(mask)
    height, width = mask.shape
    bands = {"top": (slice(0, BAND), slice(None)),
             "bottom": (slice(height - BAND, None), slice(None)),
             "left": (slice(None), slice(0, BAND)),
             "right": (slice(None), slice(width - BAND, None))}
    edge = np.zeros_like(mask)
    for side in sides:
        edge[bands[side]] = True
    rest = mask & ~edge
    count, labels = cv2.connectedComponents(rest.astype(np.uint8), connectivity=8)
    rows, cols = np.nonzero(rest)
    label = labels[rows, cols]
    inward = {"top": rows, "bottom": height - 1 - rows, "left": cols, "right": width - 1 - cols}
    sliver = np.zeros(count, bool)
    for side in sides:
        # Cut at this side's band: starts right at it, and reaches no deeper than SLIVER.
        deepest = np.zeros(count, np.int64)
        np.maximum.at(deepest, label, inward[side])
        nearest = np.full(count, np.iinfo(np.int64).max)
        np.minimum.at(nearest, label, inward[side])
        sliver |= (nearest == BAND) & (deepest < SLIVER)
    sliver[0] = False  # the label of everything unflagged
    return (edge & mask) | (rest & sliver[labels])


def may_show_edge(mask: np.ndarray, spread: int = 0) -> bool:
    """Whether any side could be a print's edge in a mask that grows by at most `spread` px
    from `mask` (HxW bool): whether flagged pixels within BAND + spread px of some side reach
    COVER of its length, each widened by `spread` along it. A bound, so that the defects of
    most photos, far from every side, cost nothing more."""
    band = BAND + spread
    height, width = mask.shape
    for near in (mask[:band].any(0), mask[height - band:].any(0),
                 mask[:, :band].any(1), mask[:, width - band:].any(1)):
        if spread:
            near = cv2.dilate(near.astype(np.uint8)[None], np.ones((1, 2 * spread + 1),
                                                                   np.uint8))[0] > 0
        if near.mean() >= COVER:
            return True
    return False


def inner_levels(gray: np.ndarray) -> dict[str, np.ndarray]:
    """Per side, the picture's level just inside the band at each position along it (float32
    1-D): the median across the strip BAND..BAND + INNER px in, then over ALONG px along."""
    height, width = gray.shape
    strips = {"top": gray[BAND:BAND + INNER].T, "bottom": gray[height - BAND - INNER:
                                                               height - BAND].T,
              "left": gray[:, BAND:BAND + INNER], "right": gray[:, width - BAND - INNER:
                                                                width - BAND]}
    levels = {}
    for side, strip in strips.items():
        across = np.clip(np.median(strip, 1) + 0.5, 0, 255).astype(np.uint8)
        if len(across) > ALONG:
            across = cv2.medianBlur(across[None], ALONG)[0]
        levels[side] = across.astype(np.float32).ravel()
    return levels


def dark_cover(mask: np.ndarray, gray: np.ndarray,
               inner: dict[str, np.ndarray]) -> dict[str, float]:
    """Per side, what share of its length the dark defects (8-connected components) of `mask`
    that lie along the frame cover. A defect lies along the frame when IN_BAND of its pixels
    are within BAND px of a side (an edge line turning a corner counts for both sides), and
    along each side it has pixels that close to; it is dark when its pixels are darker, on
    average, than the `inner_levels` of their nearest side."""
    height, width = mask.shape
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    rows, cols = np.nonzero(mask)
    label = labels[rows, cols]
    size = np.maximum(np.bincount(label, minlength=count), 1)
    inward = {"top": rows, "bottom": height - 1 - rows, "left": cols, "right": width - 1 - cols}
    position = {"top": cols, "bottom": cols, "left": rows, "right": rows}
    nearest = np.argmin(np.stack([inward[side] for side in SIDES]), 0)
    contrast = gray[rows, cols].astype(np.float32)
    for index, side in enumerate(SIDES):
        pick = nearest == index
        contrast[pick] -= inner[side][position[side][pick]]
    dark = np.bincount(label, contrast, count) / size < 0
    frame = np.minimum.reduce(list(inward.values())) < BAND
    along_frame = np.bincount(label, frame, count) / size >= IN_BAND
    along_frame[0] = False  # the label of everything unflagged
    cover = {}
    for side in SIDES:
        close = inward[side] < BAND
        covered = np.zeros(width if side in ("top", "bottom") else height, bool)
        covered[position[side][close & (along_frame & dark)[label]]] = True
        cover[side] = float(covered.mean())
    return cover
