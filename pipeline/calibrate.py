"""Pick the detection sensitivity for an archive from a few of its photos that a person has
masked: each level's masks are scored against theirs, and the level with the best pooled F1
is the one to run the rest of the archive at (`inpaint calibrate`). `compare` does so for
several detectors, with and without `--detect-edge-wear`, on the same photos, and `best_of`
picks the setting to use.

Why: the default sensitivity was calibrated on synthetic prints, and real scans differ. On the
four real prints of `benchmarks/real/`, the level picked on any two of them was also the
better one for the other two (every split picked 1.0; held-out F1 rose from 0.46-0.68 at the
default to 0.75-0.87, benchmarks/results/detect-real.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline import discover, imageio, storage
from pipeline.damage import mask_scores
from pipeline.detect import (
    DEFAULT_DETECTOR,
    DEFAULT_SCALE,
    EDGE_WEAR_DETECTORS,
    DetectorError,
    check_edge_wear,
    detect_levels,
    detector_names,
)
from pipeline.detectors.infrared import read_infrared
from pipeline.masks import MaskError, decode_mask
from pipeline.settings import DEFAULT_MAX_PIXELS

# The levels tried unless others are asked for: the default and every step up to the scale's
# end, where real prints have measured best.
LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# A flagged pixel within this many px of a marked one is right, and a marked one is found
# when a flagged one lies as near: a hand mask a pixel wider or narrower is not an error.
TOLERANCE = 2


@dataclass
class LevelScore:
    """How one sensitivity's masks match the hand masks, all photos' pixels pooled."""

    sensitivity: float
    precision: float
    recall: float
    f1: float
    flagged: float  # share of the photos' pixels flagged
    found_pixels: int = 0
    marked_pixels: int = 0
    # (flagged pixels that are right, flagged, marked pixels found, photo pixels): what the
    # ratios were computed from, so that scores of photos apart pool exactly.
    counts: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass
class Calibration:
    """One setting's (detector, edge wear) every level's scores, the level picked (best F1;
    of equals, the lower level, which flags less), the photos scored, those left out with the
    reason, and the detectors that ran (what `auto` picked)."""

    detector: str
    levels: list[LevelScore]
    best: LevelScore
    photos: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    edge_wear: bool = False


def calibrate(images: str, masks: str, detector: str = DEFAULT_DETECTOR,
              levels: Sequence[float] = LEVELS, detect_scale: float = DEFAULT_SCALE,
              detect_margin: int = 0, storage_options: dict | None = None,
              edge_wear: bool = False,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> Calibration:
    """Score `detector` at each of `levels` on the photos of IMAGES that have a hand mask in
    MASKS (same relative path, any image extension; white = damage); photos without one are
    not scored, and a photo or mask that cannot be read is left out with the reason."""
    return compare(images, masks, [(detector, edge_wear)], levels, detect_scale, detect_margin,
                   storage_options, max_pixels)[0]


def compare(images: str, masks: str, settings: Sequence[tuple[str, bool]],
            levels: Sequence[float] = LEVELS, detect_scale: float = DEFAULT_SCALE,
            detect_margin: int = 0, storage_options: dict | None = None,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Calibration]:
    """`calibrate` for each of `settings` (detector, edge wear), in that order, on the same
    photos: each photo is read once, and one that a setting cannot score is left out of all,
    so that the settings' figures compare."""
    levels = sorted(set(float(level) for level in levels))
    if not levels or not all(0 <= level <= 1 for level in levels):
        raise discover.UsageError(f"levels must lie within [0, 1], got {levels}")
    settings = list(dict.fromkeys(settings))
    if not settings:
        raise discover.UsageError("no detector to calibrate")
    for detector, edge_wear in settings:
        check_setting(detector, edge_wear)
    if not 0 < detect_scale <= 1:
        raise discover.UsageError(f"--detect-scale must be within (0, 1], got {detect_scale}")
    # right, found, hit, pixels per setting and level
    totals = {setting: {level: np.zeros(4, np.int64) for level in levels} for setting in settings}
    ran = {setting: set() for setting in settings}
    photos, skipped, marked = [], [], 0
    for item in discover.iter_pairs(images, masks, storage_options=storage_options):
        if item.problem:
            continue  # no hand mask: nothing to score it against
        try:
            pixels, infrared, true = read_pair(item, storage_options, max_pixels)
            found = detected(pixels, infrared, settings, levels, detect_scale, detect_margin)
        except (imageio.ImageDecodeError, MaskError, DetectorError, OSError) as error:
            skipped.append((item.relative_path, str(error)))
            continue
        for setting, detections in found.items():
            for level, detection in zip(levels, detections, strict=True):
                totals[setting][level] += pixel_counts(detection.mask, true)
                ran[setting].add(detection.detector)
        photos.append(item.relative_path)
        marked += int(true.sum())
    if not photos:
        raise discover.UsageError(f"no photo in {images} has a readable mask in {masks}"
                                  + (f" ({len(skipped)} left out: {skipped[0][1]})"
                                     if skipped else ""))
    if not marked:
        raise discover.UsageError(f"the masks in {masks} mark no damage: calibration needs "
                                  "photos whose damage a person has marked")
    calibrations = []
    for setting in settings:
        scores = [level_score(level, totals[setting][level], marked) for level in levels]
        calibrations.append(Calibration(setting[0], scores, best_level(scores), photos, skipped,
                                        sorted(ran[setting]), setting[1]))
    return calibrations


def detected(pixels: np.ndarray, infrared: np.ndarray | None,
             settings: Sequence[tuple[str, bool]], levels: list[float], detect_scale: float,
             detect_margin: int) -> dict[tuple[str, bool], list]:
    """Each setting's detections at `levels`; a detector's settings without and with edge
    wear share one detection (its candidates scored once, the levels compared twice)."""
    found = {}
    for detector in dict.fromkeys(detector for detector, _ in settings):
        wears = [wear for name, wear in settings if name == detector]
        detections = detect_levels(pixels, detector, levels * len(wears), infrared,
                                   scale=detect_scale, margin=detect_margin,
                                   edge_wear=[wear for wear in wears for _ in levels])
        for index, wear in enumerate(wears):
            found[detector, wear] = detections[index * len(levels):(index + 1) * len(levels)]
    return found


def check_setting(detector: str, edge_wear: bool) -> None:
    """Refuse an unknown detector, or edge wear for one without it, at once (not as every
    photo's reason to be left out)."""
    if detector not in detector_names():
        raise discover.UsageError(f"unknown detector {detector!r}; choose from "
                                  f"{', '.join(detector_names())}")
    if edge_wear:
        try:
            check_edge_wear(detector)
        except DetectorError as error:
            raise discover.UsageError(str(error)) from None


def settings_to_compare(detectors: Sequence[str], edge_wear: bool = False,
                        both: bool = False) -> list[tuple[str, bool]]:
    """The (detector, edge wear) settings to score: each detector with `edge_wear`, or, with
    `both`, each without it and, where the detector takes it, with it."""
    if not both:
        return [(detector, edge_wear) for detector in detectors]
    return [(detector, wear) for detector in detectors
            for wear in ((False, True) if detector in EDGE_WEAR_DETECTORS else (False,))]


def best_of(calibrations: Sequence[Calibration]) -> Calibration:
    """The setting whose best level scores the best F1; of equals, the lower level, then the
    setting named first."""
    return max(calibrations, key=lambda c: (c.best.f1, -c.best.sensitivity))


def read_pair(item: discover.Item, storage_options: dict | None,
              max_pixels: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """A photo's pixels, its IR channel (or None) and its hand mask (HxW bool)."""
    data = storage.read_uri(item.image_uri, storage_options)
    photo = imageio.decode(data, max_pixels)
    infrared = read_infrared(data)
    mask_bytes = storage.read_uri(item.mask_uri, storage_options)
    true = decode_mask(mask_bytes, photo.pixels.shape[:2], max_pixels=max_pixels)
    return photo.pixels, infrared, true


def pixel_counts(found: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(flagged pixels that are right, flagged pixels, marked pixels found, photo pixels)."""
    scores = mask_scores(found, true, TOLERANCE)
    flagged = int(found.sum())
    return np.array([round(scores["precision"] * flagged), flagged,
                     round(scores["recall"] * int(true.sum())), found.size], np.int64)


def level_score(level: float, counts: np.ndarray, marked: int) -> LevelScore:
    right, flagged, hit, pixels = (int(value) for value in counts)
    precision = right / flagged if flagged else 0.0
    recall = hit / marked
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return LevelScore(level, precision, recall, f1, flagged / pixels, flagged, marked,
                      (right, flagged, hit, pixels))


def best_level(scores: Sequence[LevelScore]) -> LevelScore:
    """The level with the best F1; of equals, the lower level, which flags less."""
    return max(scores, key=lambda score: (score.f1, -score.sensitivity))
