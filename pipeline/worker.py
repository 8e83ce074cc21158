"""The per-item work: read, fill, write, and return one manifest row; never raise.

`Restorer` is the Ray actor class `pipeline.runner` starts on each worker (the method is
loaded once per actor); it restores a batch of items, which it fills together
(`restore_batch`); `restore_item` is the same work for one item, callable from a plain loop.
Reads run ahead of the fill and writes behind it on the actor's I/O threads
(`pipeline.stages`), so storage waits overlap the fill.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipeline import autodetect, imageio, manifest, storage
from pipeline.discover import Item
from pipeline.masks import MaskError, decode_mask, hole_fraction
from pipeline.methods import Method, NothingToConditionOn, Result, load_method
from pipeline.settings import RunSettings
from pipeline.stages import Stages

# Decoded pixels gathered to fill several photos together: past it, the photos gathered so
# far are filled. An actor holds at most HELD_GROUPS times as many decoded pixels across its
# batches (one group being filled, the next read ahead, the last written behind), or one
# bigger photo alone.
GROUP_PIXELS = 16_000_000
HELD_GROUPS = 2
# Photo sizes whose `--mask` an actor keeps resized (one mask for every photo).
SHARED_MASK_SIZES = 8
# An object's repr inside a library's message, e.g. Pillow's "cannot identify image file
# <_io.BytesIO object at 0x7ff6...>".
_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")

# error_kind of an item whose write the output location refused for good (full, over quota,
# read-only, denied), or that was not attempted after such a refusal: the driver stops.
REFUSED = "refused"
# The row key under which an item's output bytes travel when `Context.keep_outputs` is set;
# never a manifest column (manifest.to_table keeps only its own columns).
OUTPUT_DATA = "_output_data"
# The row key that marks the rows of an actor's process Ray started again after the last
# one died (SIGKILL, the OOM killer): the driver pops it (pipeline.runner).
RESTARTED = "_restarted"


def error_kind(error: BaseException) -> str:
    """A short, stable name for what went wrong, for grouping failures in reports."""
    if isinstance(error, imageio.ImageDecodeError):
        return "decode"
    if isinstance(error, MaskError):
        return "mask"
    if isinstance(error, autodetect.DetectorError):
        return "detect"
    if isinstance(error, NothingToConditionOn):
        return "all_hole"
    if isinstance(error, storage.WriteRefused):
        return REFUSED
    if isinstance(error, FileNotFoundError):
        return "missing"
    if isinstance(error, OSError | storage.StorageError):
        return "storage"
    return "internal"


def choose_device(gpus: float) -> str:
    """CUDA when Ray gave this actor a GPU and torch can see it, otherwise the CPU."""
    if gpus <= 0:
        return "cpu"
    import ray
    import torch

    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


def limit_threads(cpus: float) -> None:
    """One actor per requested CPU share: keep torch and OpenCV from oversubscribing."""
    import cv2

    threads = max(1, int(round(cpus)))
    cv2.setNumThreads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


class Context:
    """What every item of one actor shares: settings, the loaded method, who we are."""

    def __init__(self, settings: RunSettings, params: str, device: str = "cpu"):
        self.settings = settings
        self.params = params
        self.device = device
        # `inpaint detect` fills nothing: it needs no inpainting method.
        self.method: Method | None = None if settings.task == "detect" else load_method(
            settings.method, settings.method_params, device, settings.seed, settings.weights,
            settings.storage_options)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.model = getattr(self.method, "model_name", None)
        self.weights_sha256 = getattr(self.method, "weights_sha256", None)
        # Outputs stay in the rows (OUTPUT_DATA) instead of being written one file each:
        # a dataset's writer puts them in its parts (pipeline.datasets).
        self.keep_outputs = False
        # The first write the output location refused: after it this actor attempts nothing,
        # since every later write would fail the same way.
        self.refused: storage.WriteRefused | None = None
        self.stages = Stages()
        self.shared_mask = SharedMask(settings)


def output_uri_for(settings: RunSettings, relative_path: str) -> str:
    if settings.output_format:
        stem = posixpath.splitext(relative_path)[0]
        relative_path = stem + imageio.extension_for(imageio.FORMAT_NAMES[settings.output_format])
    return storage.join(settings.out, relative_path)


def write_folders(settings: RunSettings, items: list[Item]) -> set[str]:
    """The folders a batch's writes go to: its outputs' and its detected masks'. The driver
    looks there for the temporaries of a process killed on the batch (pipeline.runner)."""
    folders = set()
    for item in items:
        if settings.task != "detect":
            folders.add(posixpath.dirname(output_uri_for(settings, item.relative_path)))
        if settings.task == "detect" or (item.mask_uri is None and settings.masks == "auto"):
            uri = autodetect.detected_mask_uri(settings, item.relative_path)
            folders.add(posixpath.dirname(uri))
    return folders


def restore_item(item: Item, context: Context) -> dict[str, Any]:
    """Process one item end to end and return its manifest row; errors become the row."""
    return restore_batch([item], context)[0]


def restore_batch(items: list[Item], context: Context) -> list[dict[str, Any]]:
    """Process a Ray batch: read and prepare items, fill them together (the method shares
    work across them, e.g. crops in one GPU pass), write each; one row per item.

    Files are read ahead on the actor's read threads and written behind on its write
    threads (`pipeline.stages`); the rows come back once every output is written. Photos
    are gathered up to `GROUP_PIXELS` per fill, and the actor's decoded pixels stay under
    `HELD_GROUPS` groups' worth (one bigger photo is let in alone), so a batch of big scans
    costs the memory of one; reads never wait for the budget (decoding does), so a batch
    that waits for its next read while holding a group blocks no other. An item's
    `seconds` is its own reading, decoding and writing plus an equal share of its group's
    fill.
    """
    stages = context.stages
    jobs, group, writes = [], [], []

    def fill() -> None:
        writes.extend(_fill_and_write(group, context))
        group.clear()

    read = (lambda item: None) if context.settings.task == "detect" else _fetch_for(context)
    for item, fetched in stages.read_ahead(items, read, GROUP_PIXELS):
        job = Job(item, context, fetched, fill)
        jobs.append(job)
        if job.ready:
            group.append(job)
        if sum(job.held for job in group) >= GROUP_PIXELS:
            fill()
    fill()
    for write in writes:
        write.result()  # each write ends in its row; this waits for them
    return [job.row for job in jobs]


def _fill_and_write(group: list[Job], context: Context) -> list:
    """Fill a group under the actor's fill lock; its writes go to the write threads."""
    if not group:
        return []
    writes = context.stages.writes
    if context.refused is not None:  # nothing can be written: do not fill either
        return [writes.submit(job.finish, context.refused, 0.0) for job in group]
    with context.stages.fill_lock:
        clock = time.perf_counter()
        try:
            outcomes = context.method.call_many([(job.photo.pixels, job.mask)
                                                 for job in group])
        except Exception as error:  # call_many reports per photo; this is a method's own bug
            outcomes = [error] * len(group)
        share = (time.perf_counter() - clock) / len(group)
    return [writes.submit(job.finish, outcome, share)
            for job, outcome in zip(group, outcomes, strict=True)]


def _fetch_for(context: Context):
    """What the read threads do for an item: its image's bytes and its mask's (a
    dataset's row carries both; `--mask` is read once per actor, by `SharedMask`)."""
    settings = context.settings

    def fetch(item: Item) -> tuple[bytes, bytes | Exception | None]:
        if item.problem or context.refused is not None:  # nothing to read, or to write
            return b"", None
        image = item.image_bytes
        if image is None:
            image = storage.read_uri(item.image_uri, settings.storage_options)
        if (item.mask_uri is None and settings.masks == "auto") or context.shared_mask.serves(
                item):
            return image, None
        try:
            return image, _read_mask(item, settings)
        except Exception as error:  # raised when the item gets to its mask, after decoding
            return image, error

    return fetch


def base_row(item: Item, context: Context) -> dict[str, Any]:
    """An item's manifest row before any work: who it is and what does it."""
    return manifest.empty_row() | {
        "item_id": item.item_id,
        "relative_path": item.relative_path,
        "image_uri": item.image_uri,
        "mask_uri": item.mask_uri,
        "input_fingerprint": item.input_fingerprint,
        "method": context.settings.method,
        "params": context.params,
        "worker": context.worker,
        "device": context.device,
        "model": context.model,
        "weights_sha256": context.weights_sha256,
        "started_at": datetime.now(UTC),
    }


class Job:
    """One item's way through a batch: prepared on creation (its bytes, read ahead, are
    decoded with its mask), finished with the method's outcome (encode, write) on a write
    thread. Every error ends up in `row`. `held`: the actor's budget pixels it holds, from
    its decoding until it is finished; `make_room` fills the batch's group when the budget
    is full, so that the pixels this job waits for are not its own batch's."""

    def __init__(self, item: Item, context: Context, fetched: Future | None = None,
                 make_room: Callable[[], None] = lambda: None):
        self.context = context
        self.seconds = 0.0
        self.ready = False
        self.held = 0
        self.row = base_row(item, context)
        self._timed(self._prepare, item, fetched, make_room)
        if not self.ready:
            self._close()

    def finish(self, outcome: Result | Exception, fill_seconds: float) -> None:
        self.seconds += fill_seconds
        self._timed(self._write, outcome)
        # Free the decoded photo whether or not it was written: a failed fill or write
        # must not keep a big scan in memory for the rest of the batch.
        self.photo = self.mask = None
        if isinstance(outcome, Exception):
            # Its traceback's frames (the method's, this job's) hold the group's pixels in a
            # reference cycle that only the garbage collector would break.
            outcome.__traceback__ = None
        self._close()

    def _timed(self, step, *args) -> None:
        clock = time.perf_counter()
        try:
            if self.context.refused is None:
                step(*args)
        except storage.WriteRefused as error:
            self.context.refused = error.with_traceback(None)  # kept: it holds no frames
        except Exception as error:
            self.ready = False
            self.row |= {"status": "failed", "error": describe(error, self.row),
                         "error_kind": error_kind(error), "output_uri": None}
        if self.context.refused is not None:
            self.ready = False
            self.row |= {"status": "failed", "error": str(self.context.refused),
                         "error_kind": REFUSED, "output_uri": None}
        self.seconds += time.perf_counter() - clock

    def _close(self) -> None:
        self.context.stages.budget.release(self.held)
        self.held = 0
        self.row["seconds"] = self.seconds
        self.row["finished_at"] = datetime.now(UTC)

    def _prepare(self, item: Item, fetched: Future | None,
                 make_room: Callable[[], None]) -> None:
        settings, stages = self.context.settings, self.context.stages
        if item.problem:
            raise MaskError(item.problem)
        if settings.task == "detect":
            with stages.fill_lock:  # the detector's device is sized for one, as a fill's
                self.row |= autodetect.detect_item(item, settings, self.context.device)
            return
        image_bytes, read_mask = (fetched.result() if fetched is not None
                                  else _fetch_for(self.context)(item))
        opened = imageio.open_checked(image_bytes, settings.max_pixels)
        pixels = opened.width * opened.height
        if not stages.budget.try_acquire(pixels, HELD_GROUPS * GROUP_PIXELS):
            make_room()
            stages.budget.acquire(pixels, HELD_GROUPS * GROUP_PIXELS)
        self.held = stages.item_pixels = pixels
        photo = imageio.decode(image_bytes, settings.max_pixels, opened)
        imageio.check_writable(photo, settings.output_format)  # a GIF without --format
        found: dict[str, Any] = {}
        if item.mask_uri is None and settings.masks == "auto":
            with stages.fill_lock:
                mask, found = autodetect.auto_mask(item, photo, image_bytes, settings,
                                                   self.context.device)
            mask_bytes = b""
        elif self.context.shared_mask.serves(item):
            mask_bytes, mask = self.context.shared_mask.for_photo(photo)
        else:
            if isinstance(read_mask, Exception):
                raise read_mask
            mask_bytes = read_mask
            # One mask for every photo (--mask, the watermark case) is resized to each.
            resize = settings.resize_masks or settings.mask is not None
            mask = decode_mask(mask_bytes, (photo.height, photo.width), settings.invert_mask,
                               resize, settings.max_pixels)
            if settings.masks == "auto":  # a hand mask won over detection
                found = autodetect.hand_mask_facts(mask_bytes)
        digest = hashlib.sha256(image_bytes)
        digest.update(mask_bytes)  # the hash of both, without a copy of their concatenation
        self.row |= found | {
            "input_sha256": digest.hexdigest(),
            "width": photo.width,
            "height": photo.height,
            "hole_fraction": hole_fraction(mask),
            "input_bytes": len(image_bytes),
        }
        self.output_uri = (item.output_uri if self.context.keep_outputs
                           else output_uri_for(settings, item.relative_path))
        if not mask.any():
            data = _unchanged_bytes(photo, image_bytes, settings)
            self._put(data)
            self.row |= {"status": "skipped", "error": "empty mask: nothing to fill, input copied",
                         "output_uri": self.output_uri, "output_bytes": len(data)}
            return
        self.photo, self.mask, self.ready = photo, mask, True

    def _put(self, data: bytes) -> None:
        """Write the output file; or, for a dataset, keep the bytes in the row: its part is
        written whole, with every item of it (pipeline.datasets)."""
        if self.context.keep_outputs:
            self.row[OUTPUT_DATA] = data
        else:
            settings = self.context.settings
            storage.write_uri(self.output_uri, data, settings.storage_options, settings.run_id)

    def _write(self, outcome: Result | Exception) -> None:
        if isinstance(outcome, Exception):
            raise outcome
        settings = self.context.settings
        data, encoding = imageio.encode_with_note(self.photo, outcome.pixels,
                                                  settings.output_format)
        self._put(data)
        self.row |= {"status": "ok", "output_uri": self.output_uri, "output_bytes": len(data),
                     "encoding": encoding, "iterations": outcome.iterations,
                     "loss": outcome.loss, "tone": outcome.tone}


def describe(error: BaseException, row: dict[str, Any]) -> str:
    """The `error` of a failed row: the file it concerns, then the reason in words.

    The file is the mask for mask errors, the path an OS error names, the photo otherwise;
    it is left out when the reason names it already. Our own errors (ValueError) say what
    is wrong; the type of any other is kept, since it is a bug's or a library's. An
    object's repr (`<_io.BytesIO object at 0x...>`) means nothing to a person: dropped.
    """
    if isinstance(error, FileNotFoundError):
        reason = "not found"
    elif isinstance(error, OSError) and error.strerror:
        reason = error.strerror
    else:
        reason = str(error) or type(error).__name__
        if not isinstance(error, ValueError):
            reason = f"{type(error).__name__}: {reason}"
    reason = _OBJECT_REPR.sub("", reason)
    if isinstance(error, OSError) and isinstance(error.filename, str):
        file = error.filename
    elif isinstance(error, MaskError | NothingToConditionOn) and row["mask_uri"]:
        file = row["mask_uri"]
    else:
        file = row["image_uri"]
    return reason if posixpath.basename(file) in reason else f"{file}: {reason}"


class SharedMask:
    """`--mask`, one mask for every photo (the watermark case): read once per actor, and
    decoded and resized (nearest-neighbour) once per photo size, not once per photo."""

    def __init__(self, settings: RunSettings):
        self.settings = settings
        self._bytes: bytes | None = None
        self._sized: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def serves(self, item: Item) -> bool:
        return (self.settings.mask is not None and item.mask_bytes is None
                and item.mask_uri == self.settings.mask)

    def for_photo(self, photo: imageio.Photo) -> tuple[bytes, np.ndarray]:
        """The mask's bytes and its holes at the photo's size (the item's own copy: a
        method may draw on it)."""
        settings, size = self.settings, (photo.height, photo.width)
        with self._lock:
            if self._bytes is None:
                self._bytes = _read_mask_uri(settings.mask, settings)
            mask = self._sized.get(size)
        if mask is None:  # a bad mask is decoded (and fails) again for each photo
            mask = decode_mask(self._bytes, size, settings.invert_mask, True,
                               settings.max_pixels)
            with self._lock:
                if len(self._sized) >= SHARED_MASK_SIZES:
                    self._sized.clear()
                self._sized[size] = mask
        return self._bytes, mask.copy()


def _read_mask(item: Item, settings: RunSettings) -> bytes:
    if item.mask_bytes is not None:  # a dataset's row carries its mask
        return item.mask_bytes
    return _read_mask_uri(item.mask_uri, settings)


def _read_mask_uri(uri: str, settings: RunSettings) -> bytes:
    try:
        return storage.read_uri(uri, settings.storage_options)
    except FileNotFoundError:
        raise MaskError(f"mask not found: {uri}") from None


def _unchanged_bytes(photo: imageio.Photo, original: bytes, settings: RunSettings) -> bytes:
    if settings.output_format and imageio.FORMAT_NAMES[settings.output_format] != photo.format:
        return imageio.encode(photo, photo.pixels, settings.output_format)
    return original


def restarted_actor() -> bool:
    """Whether Ray started this actor's process again after the last one died; False
    outside an actor (Ray's own check asserts there)."""
    import ray

    context = ray.get_runtime_context()
    return context.get_actor_id() is not None and bool(context.was_current_actor_reconstructed)


def restorer_class(settings: RunSettings, params: str) -> type:
    """The Ray actor class for one run (`pipeline.runner` makes the pool): `restore` takes
    a batch of items and returns their manifest rows.

    Settings are baked into the class rather than passed as constructor arguments, which
    Ray would keep in the object store where a restarted actor might not find them.
    A restarted actor's rows carry `RESTARTED`: its last process may have died mid-write.
    """
    settings_json = settings.model_dump_json()

    class Restorer:
        def __init__(self):
            run_settings = RunSettings.model_validate_json(settings_json)
            device = choose_device(run_settings.gpus_per_worker)
            self.context = Context(run_settings, params, device)
            limit_threads(run_settings.cpus_per_worker)
            self.restarted = restarted_actor()

        def restore(self, items: list[Item]) -> list[dict[str, Any]]:
            return self.marked(restore_batch(items, self.context))

        def marked(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if self.restarted:
                for row in rows:
                    row[RESTARTED] = True
            return rows

    return Restorer
