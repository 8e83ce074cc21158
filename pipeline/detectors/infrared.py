"""The `infrared` detector: dust and scratches read from a film scanner's IR channel.

Dust and scratches block infrared light and a print's or slide's dyes do not, so the IR
channel of an RGBI scan shows the damage alone, against an even field.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.detectors.maps import DEFAULT_SENSITIVITY, gray_float, hysteresis


def damage_mask(infrared: np.ndarray, sensitivity: float = DEFAULT_SENSITIVITY) -> np.ndarray:
    """Damage from the IR channel: pixels that block clearly more IR than their neighbourhood."""
    ir = gray_float(infrared)
    background = cv2.medianBlur(np.clip(ir * 255, 0, 255).astype(np.uint8), 15) / 255.0
    deficit = background - ir
    spread = 1.4826 * np.median(np.abs(deficit - np.median(deficit)))
    # A fixed floor keeps a clean, flat IR frame (tiny spread) from flagging sensor noise.
    floor = 0.09 - 0.08 * sensitivity
    threshold = max(floor, (8 - 6 * sensitivity) * spread)
    mask = hysteresis(deficit, threshold / 2, threshold)
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def read_infrared(data: bytes) -> np.ndarray | None:
    """The IR channel of an RGBI TIFF (4th sample declared 'unspecified'), else None."""
    from pipeline.imageio import rgbi_samples

    samples = rgbi_samples(data)
    return None if samples is None else np.ascontiguousarray(samples[:, :, 3])
