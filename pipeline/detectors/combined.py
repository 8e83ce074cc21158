"""The `combined` detector, for scans of prints: each `verified` candidate judged by the
verifier and a U-Net trained on print damage together, their log-odds summed (the net's at
half weight). Not what `auto` runs (`pipeline.detect.AUTO_PRINT_DETECTOR` says why).

The two err apart. The verifier sees a candidate's shape and contrast but little of the photo
around it; it keeps stars and a cup's highlights and misses faint crackle. The print net sees
about 150 px of context; it finds crackle and cracks the verifier misses but takes frame lines,
lettering and towers for scratches, which the verifier mostly rejects. Its weights are round 9
of `benchmarks/train_detector.py` (see there: trained from the shipped `learned` net on old
prints with their damage, mounts, frame lines and lettering as picture), scored in one view.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from pipeline.detectors import learned, verified
from pipeline.detectors.maps import DEFAULT_SENSITIVITY, float_image, in_bands, load_weights

PRINT_NET_FILE = "damage_unet_print.npz"
# How much the net's log-odds count beside the verifier's, and in which views it is scored.
# Picked as the verifier's threshold was, on held-out prints (astronaut and china made prints,
# seeds 100 and 101; `benchmarks/combined_weight.py`): of the weights 0.25, 0.5, ... 2, the
# best F1 among those that flag at most 0.2% of each undamaged print: 0.5, F1 0.495 against
# `verified`'s 0.445. One view, not the `learned` detector's eight: the net then costs 0.6-0.9
# CPU s per MP beside the verifier's. Eight views would pick 1.0 (F1 0.532) at eight times
# that, far over the project's line of 2 s per MP.
NET_WEIGHT = 0.5
NET_VIEWS = learned.VIEWS[:1]
# The net's probability is bounded away from 0 and 1 before its log-odds are taken, so that a
# saturated score counts at most NET_WEIGHT * log((1 - P_BOUND) / P_BOUND) (6.9 log-odds).
P_BOUND = 1e-6


@lru_cache(maxsize=4)
def load_print_net(device: str = "cpu"):
    """The shipped print net on `device`, ready to score (one per device and process)."""
    weights = load_weights(PRINT_NET_FILE)
    return learned.for_inference(learned.net_from_weights(weights)).to(device)


def combined_id() -> str:
    """The identity of what decides the masks, recorded in params: the verifier's (its file
    and rules), the print net's file and how the two are summed."""
    rule = (NET_WEIGHT, NET_VIEWS, P_BOUND)
    digest = hashlib.sha256(f"{verified.verifier_id()} print net "
                            f"{load_weights(PRINT_NET_FILE)['sha256']} summed {rule}".encode())
    return digest.hexdigest()[:16]


def net_log_odds(image: np.ndarray, where: np.ndarray, device: str = "cpu",
                 views: tuple[tuple[int, bool], ...] | None = None) -> np.ndarray:
    """The print net's log-odds of damage at the pixels `where` (HxW bool) holds, in the
    order of np.nonzero, averaged over `views` (NET_VIEWS unless given); the net scores the
    whole photo, in row bands on large scans as the `learned` detector scores them."""
    pixels = float_image(image)
    net, views = load_print_net(device), views or NET_VIEWS
    probability = in_bands(pixels, learned.band_rows(pixels.shape[1]), learned.TILE_OVERLAP,
                           lambda part: learned.net_probability(net, part, device, views))
    # Only the candidates' scores: full-frame temporaries would cost a scan's size in memory
    # several times over.
    picked = np.clip(probability[where], P_BOUND, 1 - P_BOUND)
    return np.log(picked / (1 - picked)).astype(np.float32)


def combined_odds(image: np.ndarray, verifier_odds: np.ndarray,
                  device: str = "cpu") -> np.ndarray:
    """The verifier's log-odds plus NET_WEIGHT times the net's at every candidate pixel
    (-inf elsewhere, as in `verifier_odds`); the net is not run on a photo without candidates."""
    candidates = np.isfinite(verifier_odds)
    if not candidates.any():
        return verifier_odds
    return summed_odds(verifier_odds, net_log_odds(image, candidates, device))


def summed_odds(verifier_odds: np.ndarray, net_odds: np.ndarray,
                weight: float | None = None) -> np.ndarray:
    """`verifier_odds` plus `weight` (NET_WEIGHT unless given) times `net_odds`, the net's
    log-odds at its candidates (`net_log_odds` of np.isfinite(verifier_odds))."""
    weight = NET_WEIGHT if weight is None else weight
    joint = verifier_odds.copy()
    joint[np.isfinite(verifier_odds)] += weight * net_odds
    return joint


def damage_mask(image: np.ndarray, sensitivity: float = DEFAULT_SENSITIVITY,
                device: str = "cpu", edge_wear: bool = False) -> np.ndarray:
    """Candidates whose summed log-odds pass the verifier's threshold at `sensitivity`, grown
    to their footprint as `verified` grows its own, less a tight scan's print edge (judged, as
    `verified` judges it, on the verifier's odds alone: the side is the photo's)."""
    return damage_masks(image, (sensitivity,), device, edge_wear)[0]


def damage_masks(image: np.ndarray, sensitivities: Sequence[float], device: str = "cpu",
                 edge_wear: bool | Sequence[bool] = False) -> list[np.ndarray]:
    """`damage_mask` at each of `sensitivities` (`edge_wear` as `verified.damage_masks`
    takes it), the verifier's and the net's odds computed once."""
    verifier_odds = verified.verified_odds(image)
    joint = combined_odds(image, verifier_odds, device)
    sides = verified.print_edge_sides(verifier_odds, image)
    return [mask_of(image, verifier_odds, joint, level, sides, wear)
            for level, wear in zip(sensitivities, verified.per_level(edge_wear, sensitivities),
                                   strict=True)]


def mask_of(image: np.ndarray, verifier_odds: np.ndarray, joint: np.ndarray,
            sensitivity: float, sides: list[str] | None = None,
            edge_wear: bool = False) -> np.ndarray:
    """The mask of summed log-odds `joint` at `sensitivity` (`damage_mask`'s last steps; with
    `edge_wear` the lower threshold near the frame), less the print edge along `sides`
    (judged on `verifier_odds` unless given)."""
    found = verified.footprint(verified.over_threshold(joint, verified.threshold(sensitivity),
                                                       edge_wear))
    return found & ~verified.print_edge(found, verifier_odds, image, sides)
