"""Find dust, scratches and hairs on scanned prints: a damage mask without drawing it by hand.

Detectors, by name, one module each in `pipeline.detectors`: `combined` (`verified`'s
candidates judged by its verifier and a print-trained net together), `verified` (local-contrast
candidates kept by a small learned verifier), `learned` (a small U-Net trained on synthetic
damage over clean photos), `infrared` (the scanner's IR channel: dust blocks infrared, dyes do
not) and `tophat` (the naive morphological baseline, kept to measure against). `auto` picks
`infrared` when the photo has an IR channel, else `verified` for a scan of a gray or toned
print (`pipeline.detectors.monochrome`), else `learned`. This module picks one by name,
runs it (on the photo shrunk, for high-dpi scans) and counts the defects it found by kind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.detectors import combined, learned, monochrome, tophat, verified
from pipeline.detectors import infrared as infrared_detector
from pipeline.detectors.maps import DEFAULT_SENSITIVITY, float_image, gray_float

DETECTORS = ("combined", "verified", "learned", "infrared", "tophat")
DEFAULT_DETECTOR = "auto"
# What `auto` runs on a photo without an IR channel: on a scan of a gray or toned print, and
# on any other photo. On real scanned prints `verified` finds 39% of the hand-marked damage
# at 0.5 where `learned` finds 3% (benchmarks/results/detect-real.md); on damage drawn over
# digital colour photos `learned` scores F1 0.71 where `verified` scores 0.22 (detect.md).
# `combined` finds more on prints (real 0.97 / 0.48 against 0.98 / 0.39; synthetic prints F1
# 0.66 against 0.59) at about twice the cost, but was judged by a rule written before it was
# scored, whose picture clause it fails: a cup's highlights on a sepia print, which `verified`
# leaves (0.12% flagged), it takes for damage (0.51%; tests/test_combined.py).
AUTO_PRINT_DETECTOR = "verified"
AUTO_PHOTO_DETECTOR = "learned"
# The detectors `--detect-edge-wear` changes (`verified.EDGE_ZONE`); `auto` with it changes prints.
EDGE_WEAR_DETECTORS = ("auto", "combined", "verified")
# The learned detector knows damage at the size a 300-600 dpi scan of a print shows it (specks
# 1-4 px, scratches 1-3 px wide). Scans at higher dpi show it larger: detect at 0.5 for twice
# the dpi, 0.25 for four times (`--detect-scale`).
DEFAULT_SCALE = 1.0


class DetectorError(ValueError):
    """The detector cannot run on this photo (e.g. `infrared` without an IR channel)."""


@dataclass
class Detection:
    """A damage mask (bool HxW, True = damage) and its defects counted by kind."""

    mask: np.ndarray
    detector: str
    defects: dict[str, int] = field(default_factory=dict)

    @property
    def damage_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def detector_names() -> list[str]:
    return ["auto", *DETECTORS]


def detect(image: np.ndarray, method: str = DEFAULT_DETECTOR,
           sensitivity: float = DEFAULT_SENSITIVITY,
           infrared: np.ndarray | None = None, device: str = "cpu",
           scale: float = DEFAULT_SCALE, margin: int = 0,
           edge_wear: bool = False) -> Detection:
    """Find damage in an HxW or HxWxC uint8/uint16 photo (channel 4, if any, is ignored).

    `sensitivity` in [0, 1]: higher finds fainter damage and flags more; 0.5 is the
    calibrated default. `infrared` is the scanner's IR channel (HxW), when there is one.
    `device` runs the nets of `learned` and `combined` ("cpu", "cuda", "cuda:1", ...). `scale` in
    (0, 1] detects on the photo shrunk by that factor, for scans whose damage is larger than
    the detector knows (see DEFAULT_SCALE); the mask comes back at the photo's size.
    `margin` px at each edge are left out (a scan cropped tight to its print shows the
    print's edge and the scanner's lid there): detection runs on the rest. `edge_wear` has
    `verified` and `combined` flag fainter damage near the frame, where prints wear
    (`verified.EDGE_ZONE`); it is refused for the other detectors, and does nothing where
    `auto` picks one of them.
    """
    return detect_levels(image, method, (sensitivity,), infrared, device, scale, margin,
                         edge_wear)[0]


def detect_levels(image: np.ndarray, method: str, sensitivities: Sequence[float],
                  infrared: np.ndarray | None = None, device: str = "cpu",
                  scale: float = DEFAULT_SCALE, margin: int = 0,
                  edge_wear: bool | Sequence[bool] = False) -> list[Detection]:
    """`detect` at each of `sensitivities`, in their order, the work the levels share done
    once: `verified` and `combined` score their candidates once and compare the odds with
    each level's threshold (`inpaint calibrate` tries six levels on each photo, without and
    with edge wear: `edge_wear` is one flag for all levels or one per level)."""
    for sensitivity in sensitivities:
        if not 0 <= sensitivity <= 1:
            raise ValueError(f"sensitivity must be within [0, 1], got {sensitivity}")
    if not 0 < scale <= 1:
        raise ValueError(f"detection scale must be within (0, 1], got {scale}")
    if any(verified.per_level(edge_wear, sensitivities)):
        check_edge_wear(method)
    if margin:
        return detect_inside(image, method, sensitivities, infrared, device, scale, margin,
                             edge_wear)
    if scale < 1:
        return detect_shrunk(image, method, sensitivities, infrared, device, scale, edge_wear)
    if method == "auto":
        method = auto_detector(image, infrared)
    masks = detector_masks(image, method, sensitivities, infrared, device, edge_wear)
    return [Detection(mask, method, count_defects(mask)) for mask in masks]


def detector_masks(image: np.ndarray, method: str, sensitivities: Sequence[float],
                   infrared: np.ndarray | None, device: str,
                   edge_wear: bool | Sequence[bool] = False) -> list[np.ndarray]:
    """The masks of detector `method` (not `auto`) at each of `sensitivities`; `edge_wear`
    counts for `verified` and `combined` only (`auto` may have picked another)."""
    if method == "combined":
        return combined.damage_masks(image, sensitivities, device, edge_wear)
    if method == "verified":
        return verified.damage_masks(image, sensitivities, edge_wear)
    if method == "learned":
        # Its cascade spends the passes by each level's threshold: nothing to share.
        pixels = float_image(image)
        return [learned.damage_mask(pixels, level, device) for level in sensitivities]
    if method == "infrared":
        if infrared is None:
            raise DetectorError("--method infrared needs an IR channel (an RGBI TIFF)")
        if infrared.shape[:2] != image.shape[:2]:
            raise DetectorError(f"IR channel is {infrared.shape[:2]}, photo {image.shape[:2]}")
        return [infrared_detector.damage_mask(infrared, level) for level in sensitivities]
    if method == "tophat":
        gray = gray_float(image)
        return [tophat.damage_mask(gray, level) for level in sensitivities]
    raise DetectorError(f"unknown detector {method!r}; choose from "
                        f"{', '.join(detector_names())}")


def check_edge_wear(method: str) -> None:
    """Refuse `--detect-edge-wear` for a detector without verifier odds to lower: said, not
    silently ignored."""
    if method not in EDGE_WEAR_DETECTORS:
        raise DetectorError(f"--detect-edge-wear works with {', '.join(EDGE_WEAR_DETECTORS)}, "
                            f"not {method}")


def auto_detector(image: np.ndarray, infrared: np.ndarray | None) -> str:
    """The detector `auto` runs on this photo."""
    if infrared is not None:
        return "infrared"
    return AUTO_PRINT_DETECTOR if monochrome.looks_like_print(image) else AUTO_PHOTO_DETECTOR


def detect_inside(image: np.ndarray, method: str, sensitivities: Sequence[float],
                  infrared: np.ndarray | None, device: str, scale: float,
                  margin: int, edge_wear: bool | Sequence[bool] = False) -> list[Detection]:
    """Detect on the photo less `margin` px at each edge; the masks come back at full size,
    the margin unflagged."""
    height, width = image.shape[:2]
    if margin < 0 or 2 * margin >= min(height, width):
        raise DetectorError(f"a detection margin of {margin} px leaves nothing of a "
                            f"{width}x{height} photo")
    inside = (slice(margin, height - margin), slice(margin, width - margin))
    found = detect_levels(image[inside], method, sensitivities,
                          None if infrared is None else infrared[inside], device, scale,
                          edge_wear=edge_wear)
    detections = []
    for detection in found:
        mask = np.zeros((height, width), bool)
        mask[inside] = detection.mask
        detections.append(Detection(mask, detection.detector, detection.defects))
    return detections


def detect_shrunk(image: np.ndarray, method: str, sensitivities: Sequence[float],
                  infrared: np.ndarray | None, device: str, scale: float,
                  edge_wear: bool | Sequence[bool] = False) -> list[Detection]:
    """Detect on the photo (and IR channel) shrunk by `scale`, then grow the masks back:
    defects are counted at the scale they were found at."""
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    small_infrared = (None if infrared is None else
                      cv2.resize(infrared, size, interpolation=cv2.INTER_AREA))
    found = detect_levels(small, method, sensitivities, small_infrared, device,
                          edge_wear=edge_wear)
    # Any overlap with a flagged small pixel counts: the fill needs the defect's whole
    # footprint, and the shrink blurred its edge into the neighbours.
    return [Detection(cv2.resize(detection.mask.astype(np.float32), (width, height),
                                 interpolation=cv2.INTER_LINEAR) > 0.25,
                      detection.detector, detection.defects) for detection in found]


def weights_id(detector: str = "learned") -> str:
    """The identity of the shipped weights `detector` runs and the rules around them (start
    of a sha256: for `learned` of the file and its cascade of views, for `verified` of the file
    and its footprint and print-edge rules, for `combined` of those and the print net's file),
    recorded in params; for `auto` of `learned`'s and `verified`'s and of the
    rule that picks between them, so that resume redoes photos when any of them changes."""
    if detector == "combined":
        return combined.combined_id()
    if detector == "verified":
        return verified.verifier_id()
    if detector != "auto":
        return learned.weights_id()
    rule = (monochrome.GRAY_CHROMA, monochrome.NEAR_GRAY_CHROMA, monochrome.MIN_CONCENTRATION,
            monochrome.MAX_CHROMA, monochrome.SAMPLE_PIXELS, AUTO_PRINT_DETECTOR,
            AUTO_PHOTO_DETECTOR)
    both = f"{learned.weights_id()} {verified.verifier_id()} picked by {rule}"
    return hashlib.sha256(both.encode()).hexdigest()[:16]



# --- defects by kind -------------------------------------------------------------------


def count_defects(mask: np.ndarray) -> dict[str, int]:
    """Count connected defects by shape: dust (small), scratch (long or straight), hair."""
    counts = {"dust": 0, "scratch": 0, "hair": 0}
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    for index in range(1, count):
        x, y, w, h = stats[index, :4]
        counts[defect_kind(labels[y:y + h, x:x + w] == index, max(mask.shape))] += 1
    return counts


def defect_kind(component: np.ndarray, long_side: int) -> str:
    """Dust fits in 8 px. Scratches run long (a fifth of the photo or more) or nearly
    straight (the box's diagonal close to the skeleton's length); hairs are short and curl."""
    from skimage.morphology import skeletonize

    if max(component.shape) <= 8:
        return "dust"
    length = max(1, int(skeletonize(component).sum()))
    span = float(np.hypot(*component.shape))
    return "scratch" if length >= 0.2 * long_side or span >= 0.95 * length else "hair"
