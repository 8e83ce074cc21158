"""Damage detection inside the pipeline: the per-item work of `inpaint detect`, and the
detected masks of `inpaint run --masks auto`, written beside the outputs for a person to
check and correct (OUT/_masks/<relative path>.png).
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from typing import Any

import numpy as np
from PIL import Image

from pipeline import imageio, storage
from pipeline.detect import Detection, DetectorError, detect
from pipeline.detectors.infrared import read_infrared
from pipeline.discover import Item
from pipeline.masks import encode_mask, hole_fraction
from pipeline.settings import RunSettings

__all__ = ["DetectorError", "auto_mask", "detect_item", "hand_mask_facts", "mask_uri_for"]

MASKS_FOLDER = "_masks"
# The PNG text chunk `inpaint review` writes into a mask it saves: the mask travels with
# the fact that a person checked it, whoever copies the file and however it is renamed.
REVIEWED_KEY = "inpaint-reviewed"


def mask_uri_for(base: str, relative_path: str) -> str:
    """Where the mask of `relative_path` goes under `base`: same relative path, `.png`."""
    return storage.join(base, posixpath.splitext(relative_path)[0] + ".png")


def detected_mask_uri(settings: RunSettings, relative_path: str) -> str:
    """Where a run writes the mask it detected: OUT itself for `inpaint detect`, beside the
    outputs (OUT/_masks) for `run --masks auto`."""
    base = settings.out if settings.task == "detect" else storage.join(settings.out,
                                                                       MASKS_FOLDER)
    return mask_uri_for(base, relative_path)


def find_damage(photo: imageio.Photo, image_bytes: bytes, settings: RunSettings,
                device: str = "cpu") -> Detection:
    """Run the chosen detector on a decoded photo (the nets of `learned` and `combined` on
    `device`); the IR channel comes from the raw bytes."""
    infrared = read_infrared(image_bytes)
    if infrared is not None and infrared.shape[:2] != photo.pixels.shape[:2]:
        # The photo was shown upright from EXIF orientation; RGBI scans carry none.
        raise imageio.ImageDecodeError("IR channel and photo differ in size or orientation")
    return detect(photo.pixels, settings.detector, settings.sensitivity, infrared, device,
                  settings.detect_scale, settings.detect_margin, settings.detect_edge_wear)


def detection_facts(detection: Detection) -> dict[str, Any]:
    return {"damage_fraction": detection.damage_fraction, "detector": detection.detector,
            "defects": json.dumps(detection.defects, sort_keys=True)}


def auto_mask(item: Item, photo: imageio.Photo, image_bytes: bytes, settings: RunSettings,
              device: str = "cpu") -> tuple[np.ndarray, dict[str, Any]]:
    """Detect the damage of one photo for `run --masks auto`; write the mask beside the
    outputs and return it with the manifest facts (its URI included)."""
    detection = find_damage(photo, image_bytes, settings, device)
    uri = detected_mask_uri(settings, item.relative_path)
    storage.write_uri(uri, encode_mask(detection.mask), settings.storage_options,
                      settings.run_id)
    return detection.mask, detection_facts(detection) | {"mask_uri": uri, "mask_reviewed": False}


def hand_mask_facts(mask_bytes: bytes) -> dict[str, Any]:
    """Manifest facts of a hand-made mask under `--masks auto`: whether `inpaint review`
    saved it (its PNG text chunk), so the manifest records which masks a person checked."""
    try:
        reviewed = REVIEWED_KEY in Image.open(io.BytesIO(mask_bytes)).info
    except Exception:  # an unreadable mask fails its item when it is decoded, not here
        reviewed = False
    return {"mask_reviewed": reviewed}


def detect_item(item: Item, settings: RunSettings, device: str = "cpu") -> dict[str, Any]:
    """The work of `inpaint detect` for one item: read, detect, write the mask PNG."""
    image_bytes = storage.read_uri(item.image_uri, settings.storage_options)
    photo = imageio.decode(image_bytes, settings.max_pixels)
    detection = find_damage(photo, image_bytes, settings, device)
    data = encode_mask(detection.mask)
    uri = detected_mask_uri(settings, item.relative_path)
    storage.write_uri(uri, data, settings.storage_options, settings.run_id)
    return detection_facts(detection) | {
        "status": "ok",
        "method": detection.detector,
        "input_sha256": hashlib.sha256(image_bytes).hexdigest(),
        "width": photo.width,
        "height": photo.height,
        "hole_fraction": hole_fraction(detection.mask),
        "input_bytes": len(image_bytes),
        "output_uri": uri,
        "output_bytes": len(data),
    }
