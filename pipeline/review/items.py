"""What `inpaint review` shows and saves: a run's reviewable photos in the order they most
need a look, downscaled views of each, and corrected masks written to the hand-masks folder.

A correction travels as a list of edits in photo pixels (reject or accept a detected
region, paint or erase a brush stroke), replayed here on the full-size mask: the browser
only ever holds the downscaled view, so a 40-megapixel scan opens as a few megapixels.
"""

from __future__ import annotations

import gzip
import json
import math
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np
import pyarrow.dataset as pads

from pipeline import imageio, manifest, storage
from pipeline.autodetect import REVIEWED_KEY, mask_uri_for
from pipeline.discover import is_image_name
from pipeline.masks import MaskError, decode_mask, encode_mask
from pipeline.settings import DEFAULT_MAX_PIXELS

# Long side of the downscaled views the browser gets.
VIEW_SIDE = 2048
# What one save may carry: far more than a person draws, far less than exhausts memory.
MAX_EDITS = 20_000
MAX_POINTS = 200_000
MAX_BRUSH = 2048
COLUMNS = ["item_id", "relative_path", "image_uri", "mask_uri", "output_uri", "status",
           "params", "width", "height", "damage_fraction", "hole_fraction", "defects",
           "mask_reviewed", "finished_at"]


class ReviewError(ValueError):
    """A request the review cannot carry out; the message says why, in words."""


@dataclass(frozen=True)
class Entry:
    """One photo of the run that can be reviewed: its latest done row's facts."""

    item_id: str
    relative_path: str
    image_uri: str
    mask_uri: str
    output_uri: str
    width: int
    height: int
    damage_fraction: float | None
    hole_fraction: float | None
    defects: int | None
    reviewed: bool
    invert_mask: bool
    max_pixels: int

    def needs_look(self) -> tuple:
        """Sort key, most doubtful first: not yet reviewed, the largest share flagged
        (detected, else filled), then the most defects; the path keeps ties stable."""
        flagged = self.damage_fraction if self.damage_fraction is not None else self.hole_fraction
        return (self.reviewed, -(flagged or 0.0), -(self.defects or 0), self.relative_path)

    def summary(self, saved: bool) -> dict[str, Any]:
        return {"id": self.item_id, "path": self.relative_path, "width": self.width,
                "height": self.height, "damage_fraction": self.damage_fraction,
                "hole_fraction": self.hole_fraction, "defects": self.defects,
                "reviewed": self.reviewed, "saved": saved}


def entries(manifest_uri: str, storage_options: dict | None = None) -> list[Entry]:
    """Photos of `--masks auto` runs whose latest done row has a mask, most doubtful first."""
    table = manifest.read(manifest_uri, storage_options, COLUMNS)
    table = table.filter(pads.field("status").isin(list(manifest.DONE_STATUSES))
                         & pads.field("mask_uri").is_valid())
    latest: dict[str, dict[str, Any]] = {}
    for row in table.sort_by([("finished_at", "ascending")]).to_pylist():
        latest[row["item_id"]] = row
    params_cache: dict[str, dict[str, Any]] = {}
    found = []
    for row in latest.values():
        text = row["params"] or "{}"
        params = params_cache.setdefault(text, json.loads(text))
        if params.get("mask_source") == "auto":
            found.append(_entry(row, params))
    return sorted(found, key=Entry.needs_look)


def _entry(row: dict[str, Any], params: dict[str, Any]) -> Entry:
    defects = json.loads(row["defects"]) if row["defects"] else None
    return Entry(
        item_id=row["item_id"], relative_path=row["relative_path"],
        image_uri=row["image_uri"], mask_uri=row["mask_uri"], output_uri=row["output_uri"],
        width=row["width"], height=row["height"], damage_fraction=row["damage_fraction"],
        hole_fraction=row["hole_fraction"],
        defects=sum(defects.values()) if defects is not None else None,
        reviewed=bool(row["mask_reviewed"]), invert_mask=bool(params.get("invert_mask")),
        max_pixels=int(params.get("max_pixels") or DEFAULT_MAX_PIXELS))


def hand_mask_uri(hand_masks: str, relative_path: str) -> str:
    """Where the corrected mask of `relative_path` goes: same relative path, `.png`.

    The path comes from a manifest, which anyone can write: one that climbs out of the
    folder (`..`, an absolute path) is refused, so a save never lands outside it.
    """
    normal = posixpath.normpath(relative_path.replace("\\", "/"))
    # `::` would make fsspec read the joined URI as a chain onto another filesystem.
    if normal.startswith(("/", "../")) or normal in ("..", ".") or "::" in normal:
        raise ReviewError(f"refusing to write a mask for {relative_path!r}: the path leaves "
                          "the hand-masks folder")
    return mask_uri_for(hand_masks, normal)


@dataclass
class View:
    """The downscaled view of one photo: JPEGs of the photo and the restored result, and
    the regions (connected components) of its current mask, labelled at view size."""

    scale: float
    width: int
    height: int
    regions: int
    source: str
    photo: bytes
    output: bytes
    labels: bytes

    def meta(self) -> dict[str, Any]:
        return {"scale": self.scale, "view_width": self.width, "view_height": self.height,
                "regions": self.regions, "source": self.source}


def view_size(width: int, height: int) -> tuple[float, int, int]:
    scale = min(1.0, VIEW_SIDE / max(width, height))
    return scale, max(1, round(width * scale)), max(1, round(height * scale))


def current_mask(entry: Entry, hand_masks: str, storage_options: dict | None) -> tuple:
    """The mask a person starts from: one saved by review before, else the run's own."""
    saved = hand_mask_uri(hand_masks, entry.relative_path)
    try:
        data, source = storage.read_uri(saved, storage_options), "saved"
    except FileNotFoundError:
        data = storage.read_uri(entry.mask_uri, storage_options)
        # Only detection records a damage fraction; a hand mask won over it otherwise.
        source = "detected" if entry.damage_fraction is not None else "hand"
    # Detected masks are written white = damage; hand masks are read as the run reads them.
    invert = entry.invert_mask and source != "detected"
    try:
        mask = decode_mask(data, (entry.height, entry.width), invert, False, entry.max_pixels)
    except MaskError as error:
        raise ReviewError(f"{entry.relative_path}: {error}") from None
    return mask, source


def regions_of(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components (8-connected, as a scratch runs diagonally): count, labels."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return count - 1, labels


def build_view(entry: Entry, hand_masks: str, storage_options: dict | None) -> View:
    mask, source = current_mask(entry, hand_masks, storage_options)
    count, labels = regions_of(mask)
    scale, width, height = view_size(entry.width, entry.height)
    photo = _view_jpeg(entry.image_uri, (width, height), entry, storage_options)
    output = _view_jpeg(entry.output_uri, (width, height), entry, storage_options)
    return View(scale, width, height, count, source, photo, output,
                _view_labels(labels, scale, (width, height)))


def _view_jpeg(uri: str, size: tuple[int, int], entry: Entry, storage_options) -> bytes:
    pixels = _view_pixels(storage.read_uri(uri, storage_options), size, entry, uri)
    if size != (pixels.shape[1], pixels.shape[0]):
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 90])
    return data.tobytes()


def _view_pixels(data: bytes, size: tuple[int, int], entry: Entry, uri: str) -> np.ndarray:
    """The photo as displayed, 8-bit RGB, at least `size` large (a view's worth)."""
    image = imageio.open_checked(data, entry.max_pixels)
    orientation = imageio._orientation(image)
    turned = orientation >= 5  # EXIF orientations 5-8 swap width and height
    shown = (image.height, image.width) if turned else image.size
    if shown != (entry.width, entry.height):
        raise ReviewError(f"{uri} is {shown[0]}x{shown[1]}, the manifest says "
                          f"{entry.width}x{entry.height}")
    if image.format == "JPEG" and image.mode in ("RGB", "L"):
        # A JPEG decodes at 1/2, 1/4 or 1/8 scale for free: a 40 MP scan costs a few MP.
        image.draft(image.mode, size[::-1] if turned else size)
        return imageio.orient(np.asarray(image.convert("RGB")), orientation)
    return _rgb8(imageio.decode(data, entry.max_pixels).pixels)


def _rgb8(pixels: np.ndarray) -> np.ndarray:
    """Any decoded photo (HxW or HxWxC, 8 or 16 bits) as 8-bit RGB for the screen."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] < 3:  # gray, gray + alpha
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def _view_labels(labels: np.ndarray, scale: float, size: tuple[int, int]) -> bytes:
    """Region labels at view size, int32 little-endian, gzipped (mostly zeros). Every
    labelled pixel marks the view pixel it falls in, so a 1-px scratch survives the
    downscale; only labelled pixels are visited (damage is a small share of a scan)."""
    if scale < 1:
        ys, xs = np.nonzero(labels)
        view = np.zeros(size[::-1], np.int32)
        view[np.minimum((ys * scale).astype(np.int64), size[1] - 1),
             np.minimum((xs * scale).astype(np.int64), size[0] - 1)] = labels[ys, xs]
        labels = view
    return gzip.compress(labels.astype("<i4").tobytes(), compresslevel=5)


def apply_edits(mask: np.ndarray, edits: Any) -> np.ndarray:
    """Replay a person's edits, in order, on the full-size mask (True = fill):
    `{"op": "reject"|"accept", "region": N}` takes out or puts back region N of `mask`;
    `{"op": "paint"|"erase", "size": D, "points": [[x, y], ...]}` is a round brush of
    diameter D photo pixels along the points (photo pixel coordinates, x right, y down)."""
    if not isinstance(edits, list) or len(edits) > MAX_EDITS:
        raise ReviewError(f"edits must be a list of at most {MAX_EDITS}")
    count, labels = regions_of(mask)
    result = mask.copy()
    points_seen = 0
    for edit in edits:
        op = edit.get("op") if isinstance(edit, dict) else None
        if op in ("reject", "accept"):
            region = edit.get("region")
            if not isinstance(region, int) or isinstance(region, bool) or not 1 <= region <= count:
                raise ReviewError(f"no region {region!r}: the mask has regions 1..{count}")
            result[labels == region] = op == "accept"
        elif op in ("paint", "erase"):
            stroke = _stroke(mask.shape, edit)
            points_seen += len(edit["points"])
            if points_seen > MAX_POINTS:
                raise ReviewError(f"more than {MAX_POINTS} brush points in one save")
            result[stroke] = op == "paint"
        else:
            raise ReviewError(f"unknown edit {op!r}: use reject, accept, paint or erase")
    return result


def _stroke(shape: tuple[int, int], edit: dict) -> np.ndarray:
    size, points = edit.get("size"), edit.get("points")
    if not _is_number(size) or not 0 < size <= MAX_BRUSH:
        raise ReviewError(f"brush size must be a number of pixels, got {size!r}")
    if (not isinstance(points, list) or not points
            or not all(isinstance(p, list) and len(p) == 2 and all(map(_is_number, p))
                       for p in points)):
        raise ReviewError("a brush stroke needs points [[x, y], ...]")
    # A pixel is painted when its centre (i + 0.5: pixel i covers [i, i+1), as in the
    # browser) lies within size/2 of the polyline: the round brush the page draws.
    canvas = np.zeros(shape, bool)
    ends = np.array(points, float)
    radius = size / 2
    segments = zip(ends[:-1], ends[1:], strict=True) if len(ends) > 1 else [(ends[0], ends[0])]
    for a, b in segments:
        low, high = np.floor(np.minimum(a, b) - radius), np.ceil(np.maximum(a, b) + radius)
        x0, y0 = (int(max(0, v)) for v in low)
        x1, y1 = int(min(shape[1], high[0] + 1)), int(min(shape[0], high[1] + 1))
        if x1 <= x0 or y1 <= y0:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
        step = b - a
        along = (xs - a[0]) * step[0] + (ys - a[1]) * step[1]
        t = np.clip(along / (step @ step), 0, 1) if step.any() else 0.0
        near = np.hypot(xs - a[0] - t * step[0], ys - a[1] - t * step[1]) <= radius
        canvas[y0:y1, x0:x1] |= near
    return canvas


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def save_mask(entry: Entry, mask: np.ndarray, hand_masks: str,
              storage_options: dict | None) -> str:
    """Write the corrected mask (white = fill, as the run will read it) atomically to the
    hand-masks folder; return its URI. It carries the reviewed mark in a PNG text chunk."""
    target = hand_mask_uri(hand_masks, entry.relative_path)
    _refuse_shadowing_mask(target, storage_options)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    pixels = ~mask if entry.invert_mask else mask
    storage.write_uri(target, encode_mask(pixels, {REVIEWED_KEY: stamp}), storage_options)
    return target


def _refuse_shadowing_mask(target: str, storage_options: dict | None) -> None:
    """A run pairs a photo with the first hand mask of its stem, any image extension:
    another one there (x.jpg beside our x.png) would win over the saved mask unseen."""
    fs, path = storage.filesystem(target, storage_options)
    folder, stem = posixpath.split(posixpath.splitext(path)[0])
    try:
        names = storage.with_retries(lambda: fs.ls(folder, detail=False), f"list {folder}")
    except FileNotFoundError:
        return
    others = [name for name in names if is_image_name(name) and name.rstrip("/") != path
              and posixpath.splitext(posixpath.basename(name.rstrip("/")))[0] == stem]
    if others:
        raise ReviewError(f"{storage.full_uri(fs, others[0])} is already a hand mask of this "
                          "photo and would win over the reviewed one; move it away first")
