"""Find the photos to restore and pair each with its mask, from listings alone.

Discovery never reads a photo: sizes, modification times and ETags from the (paged)
listing are enough to pair images with masks and to fingerprint them for resume.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field

from pipeline import storage

# GIF is listed though it cannot be written back as it was: without --format its item
# becomes a failed row saying so (pipeline.imageio.check_writable), never a silent gap.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif")
_GLOB_CHARS = "*?["


class UsageError(ValueError):
    """A problem with the command itself, found before any item is processed."""


@dataclass(frozen=True)
class Item:
    """One photo to process, with everything a worker needs to find its inputs."""

    item_id: str
    relative_path: str
    image_uri: str
    mask_uri: str | None
    input_fingerprint: str
    problem: str | None = None
    # A dataset's row (pipeline.datasets) carries its bytes and names its place in the
    # output part; loose files leave these None and are read from their URIs.
    image_bytes: bytes | None = field(default=None, repr=False)
    mask_bytes: bytes | None = field(default=None, repr=False)
    output_uri: str | None = None


def item_id_for(relative_path: str) -> str:
    """Stable id from the relative path, so reruns and resumed runs agree."""
    return hashlib.sha256(relative_path.encode()).hexdigest()[:20]


def is_image_name(name: str) -> bool:
    base = posixpath.basename(name)
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def list_images(images: str, storage_options: dict | None = None) -> tuple[str, dict[str, dict]]:
    """Return the root the relative paths hang from and `{relative_path: listing info}`."""
    fs, path = storage.filesystem(images, storage_options)
    if any(char in path for char in _GLOB_CHARS):
        root = _glob_root(path)
        listing = storage.with_retries(lambda: fs.glob(path, detail=True), f"list {images}")
    else:
        root = path.rstrip("/")
        listing = _list_folder(fs, path, images)
        if listing is None:
            raise UsageError(f"IMAGES not found: {images}")
        if list(listing) == [root]:
            raise UsageError(f"IMAGES must be a folder or a glob, not a single file: {images}")
    found = {}
    for name, info in listing.items():
        if info.get("type", "file") != "file" or not is_image_name(name):
            continue
        relative = posixpath.relpath(name, root) if root else name
        found[relative] = info
    return storage.full_uri(fs, root), found


def _list_folder(fs, path: str, uri: str) -> dict[str, dict] | None:
    """Everything under `path` in one recursive listing, paged by the backend; None if
    nothing is there. No `isdir` first: on object stores it lists the folder once more."""
    try:
        listing = storage.with_retries(lambda: fs.find(path, detail=True), f"list {uri}")
    except FileNotFoundError:  # s3fs: the bucket itself does not exist
        return None
    except (PermissionError, storage.StorageError) as error:
        raise UsageError(f"cannot list {uri}: {error}") from None
    if not listing and not storage.with_retries(lambda: fs.isdir(path), f"stat {uri}"):
        return None
    return listing


def _glob_root(pattern: str) -> str:
    parts = pattern.split("/")
    fixed = []
    for part in parts:
        if any(char in part for char in _GLOB_CHARS):
            break
        fixed.append(part)
    return "/".join(fixed)


def list_masks(masks: str, storage_options: dict | None = None) -> dict[str, tuple[str, dict]]:
    """Index a mask folder by relative path without extension: `{stem: (uri, info)}`."""
    fs, path = storage.filesystem(masks, storage_options)
    listing = _list_folder(fs, path, masks)
    root = path.rstrip("/")
    if listing is None or list(listing) == [root]:
        raise UsageError(f"MASKS is not a folder: {masks}")
    index: dict[str, tuple[str, dict]] = {}
    for name, info in sorted(listing.items()):
        if is_image_name(name):
            stem = posixpath.splitext(posixpath.relpath(name, root))[0]
            index.setdefault(stem, (storage.full_uri(fs, name), info))
    return index


def fingerprint(*infos: dict | None) -> str:
    """Fingerprint inputs from listing facts only: size plus ETag or modification time."""
    digest = hashlib.sha256()
    for info in infos:
        if info is None:
            digest.update(b"none;")
            continue
        version = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("created")
        version = version or info.get("LastModified") or info.get("last_modified")
        digest.update(f"{info.get('size')}:{version};".encode())
    return digest.hexdigest()[:32]


def single_mask_info(mask: str, storage_options: dict | None = None) -> tuple[str, dict]:
    fs, path = storage.filesystem(mask, storage_options)
    try:
        info = storage.with_retries(lambda: fs.info(path), f"stat {mask}")
    except FileNotFoundError:
        raise UsageError(f"--mask file not found: {mask}") from None
    return storage.full_uri(fs, path), info


def pair(
    images: str,
    masks: str | None = None,
    mask: str | None = None,
    storage_options: dict | None = None,
    hand_masks: str | None = None,
) -> list[Item]:
    """List IMAGES and pair each photo with its mask; unpaired photos carry a `problem`.

    With `masks="auto"` a photo's mask is detected by the worker (`mask_uri` None), unless
    `hand_masks` holds a hand-made mask for it: a person's mask always wins.
    """
    if masks and mask:
        raise UsageError("give either --masks or --mask, not both")
    if hand_masks and masks != "auto":
        raise UsageError("--hand-masks goes with --masks auto")
    root, found = list_images(images, storage_options)
    image_fs, _ = storage.filesystem(images, storage_options)
    mask_folder = hand_masks if masks == "auto" else masks
    mask_index = list_masks(mask_folder, storage_options) if mask_folder else {}
    broadcast = single_mask_info(mask, storage_options) if mask else None
    items = []
    for relative in sorted(found):
        info = found[relative]
        image_uri = storage.full_uri(image_fs, info["name"])
        mask_uri, mask_info, problem = None, None, None
        if broadcast:
            mask_uri, mask_info = broadcast
        elif masks == "auto":
            mask_uri, mask_info = _auto_mask(relative, mask_index)
        elif masks:
            stem = posixpath.splitext(relative)[0]
            if stem in mask_index:
                mask_uri, mask_info = mask_index[stem]
            else:
                problem = f"no mask found for {relative} in {masks} (looked for {stem}.*)"
        else:
            problem = "no mask given: pass --masks FOLDER, --mask FILE or --masks auto"
        items.append(
            Item(
                item_id=item_id_for(relative),
                relative_path=relative,
                image_uri=image_uri,
                mask_uri=mask_uri,
                input_fingerprint=fingerprint(info, mask_info),
                problem=problem,
            )
        )
    return items


def _auto_mask(relative: str, mask_index: dict) -> tuple[str | None, dict | None]:
    """A hand-made mask where one exists; otherwise (None, None): the worker detects one."""
    return mask_index.get(posixpath.splitext(relative)[0], (None, None))


def check_output_location(images: str, out: str, storage_options: dict | None = None) -> None:
    """Refuse OUT equal to or inside IMAGES: outputs must never land among the inputs."""
    image_fs, image_path = storage.filesystem(images, storage_options)
    out_fs, out_path = storage.filesystem(out, storage_options)
    if image_fs.protocol != out_fs.protocol:
        return
    if any(char in image_path for char in _GLOB_CHARS):
        image_path = _glob_root(image_path)
    image_root = posixpath.normpath(image_path).rstrip("/")
    out_root = posixpath.normpath(out_path).rstrip("/")
    if out_root == image_root or out_root.startswith(image_root + "/"):
        raise UsageError(f"OUT ({out}) is equal to or inside IMAGES ({images}); choose another")
