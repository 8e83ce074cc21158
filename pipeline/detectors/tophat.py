"""The `tophat` detector: the naive morphological baseline, kept to measure the others against.

Bright and dark specks and lines under 7 px across stand out of white and black top-hats;
so do eyelashes, highlights and every fine line of the picture.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.detectors.maps import DEFAULT_SENSITIVITY


def damage_mask(gray: np.ndarray, sensitivity: float = DEFAULT_SENSITIVITY) -> np.ndarray:
    """White and black top-hats with a robust threshold: the naive baseline the issue names."""
    response = tophat_response(gray)
    median = np.median(response)
    spread = 1.4826 * np.median(np.abs(response - median))
    return response > median + (6 - 4 * sensitivity) * max(spread, 1e-3)


def tophat_response(gray: np.ndarray) -> np.ndarray:
    """How far each pixel stands out as a bright or dark speck or line under 7 px across."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    return np.maximum(cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, kernel),
                      cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel))
