"""Find the photos to restore and pair each with its mask, from listings alone.

Discovery never reads a photo: sizes, modification times and ETags from the (paged)
listing are enough to pair images with masks and to fingerprint them for resume. Items
stream out as the listing goes, one folder at a time (a plan writes them to shards,
pipeline.plans), so the driver's memory does not grow with the archive.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

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


def list_images(images: str, storage_options: dict | None = None
                ) -> tuple[str, Iterator[tuple[str, dict]]]:
    """The root the relative paths hang from, and `(relative_path, listing info)` of every
    photo in sorted order, listed as it is consumed. IMAGES itself is looked at now (a
    missing IMAGES, or a single file, is a `UsageError` at once)."""
    fs, path = storage.filesystem(images, storage_options)
    if any(char in path for char in _GLOB_CHARS):
        root = _glob_root(path)
        matches = storage.with_retries(lambda: fs.glob(path, detail=True), f"list {images}")
        files = (info for _, info in sorted(matches.items()))
    else:
        root = path.rstrip("/")
        top = _list_folder(fs, path, images)
        if top is None:
            raise UsageError(f"IMAGES not found: {images}")
        if [info["name"].rstrip("/") for info in top] == [root] and _is_file(top[0]):
            raise UsageError(f"IMAGES must be a folder or a glob, not a single file: {images}")
        files = _walk(fs, top, images)
    return storage.full_uri(fs, root), _photos(files, root)


def _photos(files: Iterator[dict], root: str) -> Iterator[tuple[str, dict]]:
    for info in files:
        if _is_file(info) and is_image_name(info["name"]):
            yield (posixpath.relpath(info["name"], root) if root else info["name"]), info


def _is_file(info: dict) -> bool:
    return info.get("type", "file") == "file"


def _walk(fs, entries: list[dict], uri: str) -> Iterator[dict]:
    """Every file below a folder's `entries`, in the order of a sorted recursive listing.

    One folder is listed at a time (`ls`, paged by the backend), so the driver holds the
    listings of the folders on the current path, never the archive's: a folder sorts
    as its name + "/", so its files come where a sorted flat listing puts them.
    """
    for info in sorted(entries, key=lambda info: info["name"] + ("" if _is_file(info) else "/")):
        if _is_file(info):
            yield info
        else:
            yield from _walk(fs, _list_folder(fs, info["name"], uri) or [], uri)


def _list_folder(fs, path: str, uri: str) -> list[dict] | None:
    """One folder's entries (files and subfolders), or None if nothing is there. No `isdir`
    first: on object stores it lists the folder once more. The backend's listing cache is
    dropped at once (s3fs keeps every folder it lists), so it cannot grow with the archive."""
    try:
        listing = storage.with_retries(lambda: fs.ls(path, detail=True), f"list {uri}")
    except FileNotFoundError:  # s3fs: the bucket itself does not exist
        return None
    except (PermissionError, storage.StorageError) as error:
        raise UsageError(f"cannot list {uri}: {error}") from None
    finally:
        fs.invalidate_cache(path)
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
    """Index a whole mask folder by relative path without extension: `{stem: (uri, info)}`."""
    fs, root, top = _mask_root(masks, storage_options)
    return _mask_index(fs, _walk(fs, top, masks), root)


def _mask_root(masks: str, storage_options: dict | None) -> tuple[Any, str, list[dict]]:
    fs, path = storage.filesystem(masks, storage_options)
    root = path.rstrip("/")
    top = _list_folder(fs, path, masks)
    if top is None or ([info["name"].rstrip("/") for info in top] == [root] and _is_file(top[0])):
        raise UsageError(f"MASKS is not a folder: {masks}")
    return fs, root, top


def _mask_index(fs, files: Iterable[dict], root: str) -> dict[str, tuple[str, dict]]:
    """`{stem: (uri, info)}` of the masks among `files`; of two masks of one stem
    (x.png, x.jpg), the first by name."""
    index: dict[str, tuple[str, dict]] = {}
    for info in sorted(files, key=lambda info: info["name"]):
        if _is_file(info) and is_image_name(info["name"]):
            stem = posixpath.splitext(posixpath.relpath(info["name"], root))[0]
            index.setdefault(stem, (storage.full_uri(fs, info["name"]), info))
    return index


class MaskFolders:
    """A mask folder mirroring IMAGES, read one folder at a time as pairing walks IMAGES:
    the masks of x/y.jpg are in MASKS/x/, so the driver holds the mask listings of the
    folders on the current path, never the whole folder's."""

    def __init__(self, masks: str, storage_options: dict | None = None):
        self.uri = masks
        self.fs, self.root, top = _mask_root(masks, storage_options)
        self.folders = {"": _mask_index(self.fs, top, self.root)}

    def get(self, stem: str) -> tuple[str, dict] | None:
        folder = posixpath.dirname(stem)
        if folder not in self.folders:
            # A sorted walk never comes back to a folder it left: keep its ancestors only.
            self.folders = {name: index for name, index in self.folders.items()
                            if name == "" or folder.startswith(name + "/")}
            listing = _list_folder(self.fs, f"{self.root}/{folder}", self.uri) or []
            self.folders[folder] = _mask_index(self.fs, listing, self.root)
        return self.folders[folder].get(stem)


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
    """Every item of `iter_pairs` as a list (small archives, tests)."""
    return list(iter_pairs(images, masks, mask, storage_options, hand_masks))


def iter_pairs(
    images: str,
    masks: str | None = None,
    mask: str | None = None,
    storage_options: dict | None = None,
    hand_masks: str | None = None,
) -> Iterator[Item]:
    """List IMAGES and pair each photo with its mask; unpaired photos carry a `problem`.

    Items come in sorted order as the listing goes (a plan writes them to shards), so
    memory does not grow with the archive. Usage errors (IMAGES or MASKS missing, options
    that do not go together) are raised here, before the first item.
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
    mask_index = MaskFolders(mask_folder, storage_options) if mask_folder else None
    broadcast = single_mask_info(mask, storage_options) if mask else None
    return _paired(found, image_fs, masks, mask_index, broadcast)


def _paired(found: Iterator[tuple[str, dict]], image_fs, masks: str | None,
            mask_index: MaskFolders | None, broadcast: tuple[str, dict] | None
            ) -> Iterator[Item]:
    for relative, info in found:
        image_uri = storage.full_uri(image_fs, info["name"])
        mask_uri, mask_info, problem = None, None, None
        if broadcast:
            mask_uri, mask_info = broadcast
        elif masks == "auto":
            mask_uri, mask_info = _auto_mask(relative, mask_index)
        elif masks:
            stem = posixpath.splitext(relative)[0]
            found_mask = mask_index.get(stem)
            if found_mask:
                mask_uri, mask_info = found_mask
            else:
                problem = f"no mask found for {relative} in {masks} (looked for {stem}.*)"
        else:
            problem = "no mask given: pass --masks FOLDER, --mask FILE or --masks auto"
        yield Item(
            item_id=item_id_for(relative),
            relative_path=relative,
            image_uri=image_uri,
            mask_uri=mask_uri,
            input_fingerprint=fingerprint(info, mask_info),
            problem=problem,
        )


def _auto_mask(relative: str, mask_index: MaskFolders | None) -> tuple[str | None, dict | None]:
    """A hand-made mask where one exists; otherwise (None, None): the worker detects one."""
    found = mask_index.get(posixpath.splitext(relative)[0]) if mask_index else None
    return found or (None, None)


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
