"""Planning a dataset run: list its parts, read their keys, make one Item per row.

Listings and keys only (a key column, a footer, a shard's member headers): no photo is
read, so planning a dataset costs what planning loose files does.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline import discover, storage
from pipeline.datasets import KEY_SEPARATOR, SUFFIXES, format_module, format_of
from pipeline.discover import Item, UsageError
from pipeline.settings import RunSettings

_BRACE = re.compile(r"\{([^{}]*)\}")
_PATTERN_CHARS = "*?[{"


@dataclass(frozen=True)
class Part:
    """One input part and where its output part goes."""

    uri: str
    out_uri: str
    relative_path: str
    info: dict  # the part's listing facts (size, ETag or mtime): its rows' fingerprint


def expand_braces(pattern: str) -> list[str]:
    """WebDataset's shard patterns: `{000..009}` (zero-padded ranges) and `{a,b}` lists."""
    found = _BRACE.search(pattern)
    if not found:
        return [pattern]
    body, head, tail = found.group(1), pattern[:found.start()], pattern[found.end():]
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if span:
        first, last = span.groups()
        width = len(first) if first.startswith("0") else 0
        choices = [str(n).zfill(width) for n in range(int(first), int(last) + 1)]
    else:
        choices = body.split(",")
    return [name for choice in choices for name in expand_braces(head + choice + tail)]


def list_parts(settings: RunSettings) -> tuple[str, list[Part]]:
    """The dataset's root folder and its parts (sorted by name), from listings alone."""
    kind = format_of(settings)
    suffix = SUFFIXES[kind]
    fs, path = storage.filesystem(settings.images, settings.storage_options)
    patterns = expand_braces(path)
    found: dict[str, dict] = {}
    for pattern in patterns:
        listed = _list_pattern(fs, pattern, suffix, settings.images)
        if not listed and "{" in path and not any(char in pattern for char in "*?["):
            # A shard the brace pattern names is missing: say so, never run on without it.
            raise UsageError(f"IMAGES names a part that is not there: "
                             f"{storage.full_uri(fs, pattern)}")
        found |= listed
    if not found:
        raise UsageError(f"no {suffix} parts found in IMAGES: {settings.images}")
    root = _root_of(fs, path, patterns)
    parts = []
    for name in sorted(found):
        relative = posixpath.relpath(name, root) if root else name
        part = Part(storage.full_uri(fs, name), storage.join(settings.out, relative), relative,
                    found[name])
        # The manifest's URIs are PART#KEY: the first separator must be the one we put there.
        if KEY_SEPARATOR in part.uri + part.out_uri:
            raise UsageError(f"a part's path may not contain {KEY_SEPARATOR!r}: {part.uri} "
                             f"-> {part.out_uri}")
        parts.append(part)
    return storage.full_uri(fs, root), parts


def _list_pattern(fs, pattern: str, suffix: str, uri: str) -> dict[str, dict]:
    def wanted(name: str, info: dict) -> bool:
        base = posixpath.basename(name)
        return (info.get("type", "file") == "file" and base.lower().endswith(suffix)
                and not base.startswith((".", "_")))

    try:
        if any(char in pattern for char in "*?["):
            listing = storage.with_retries(lambda: fs.glob(pattern, detail=True), f"list {uri}")
        else:  # a part, or a folder of parts (Spark writes folders named x.parquet)
            listing = storage.with_retries(lambda: fs.find(pattern, detail=True),
                                           f"list {uri}")
    except FileNotFoundError:
        listing = {}
    except (PermissionError, storage.StorageError) as error:
        raise UsageError(f"cannot list {uri}: {error}") from None
    return {name: info for name, info in listing.items() if wanted(name, info)}


def _root_of(fs, path: str, patterns: list[str]) -> str:
    """The folder the output parts' relative names hang from: IMAGES itself when it is a
    folder, else the fixed folders before the first pattern (or the one file's folder)."""
    plain = patterns == [path] and not any(char in path for char in _PATTERN_CHARS)
    if plain and storage.with_retries(lambda: fs.isdir(path), f"stat {path}"):
        return path.rstrip("/")
    fixed = []
    for name in path.rstrip("/").split("/"):
        if any(char in name for char in _PATTERN_CHARS):
            return "/".join(fixed)
        fixed.append(name)
    return posixpath.dirname("/".join(fixed))  # one part file


def refuse_parts_as_files(settings: RunSettings) -> None:
    """A folder IMAGES without photos but with dataset parts is a dataset given without
    `--input-format`: say so, instead of a run that finds nothing and succeeds."""
    fs, path = storage.filesystem(settings.images, settings.storage_options)
    if any(char in path for char in _PATTERN_CHARS):
        return
    for kind, suffix in SUFFIXES.items():
        parts = _list_pattern(fs, path, suffix, settings.images)
        if parts:
            raise UsageError(f"IMAGES holds no photos but {len(parts)} {suffix} part(s): pass "
                             f"--input-format {kind} to restore them as a dataset")


def check_settings(settings: RunSettings) -> None:
    """What a dataset input cannot take, said before any work."""
    if settings.task == "detect":
        raise UsageError("inpaint detect reads loose files only, not Parquet or WebDataset")
    if settings.masks:
        raise UsageError("--masks does not go with a dataset input: masks come from its mask "
                         "column (--mask-column) or --mask FILE")


def find_items(settings: RunSettings) -> Iterator[Item]:
    """Every row of every part as an Item (bytes not read), in part then row order, as the
    parts are scanned (a plan writes them to shards). The parts are listed, and usage
    errors raised, here, before the first item."""
    check_settings(settings)
    root, parts = list_parts(settings)
    # Outputs must never land among the inputs: OUT may not be the parts' folder or below it.
    discover.check_output_location(root, settings.out, settings.storage_options)
    broadcast = (discover.single_mask_info(settings.mask, settings.storage_options)
                 if settings.mask else None)
    return _items(parts, format_module(format_of(settings)), settings, broadcast)


def _items(parts: list[Part], module, settings: RunSettings,
           broadcast: tuple[str, dict] | None) -> Iterator[Item]:
    for part in parts:
        fs, path = storage.filesystem(part.uri, settings.storage_options)
        for entry in module.scan(fs, path, settings):
            yield _item(part, entry, settings, broadcast)


@dataclass(frozen=True)
class Entry:
    """One row of a part as the driver sees it: its key, and its mask's name if any."""

    key: str
    mask_name: str | None = None
    problem: str | None = None


def _item(part: Part, entry: Entry, settings: RunSettings,
          broadcast: tuple[str, dict] | None) -> Item:
    relative = f"{part.relative_path}{KEY_SEPARATOR}{entry.key}"
    problem = entry.problem
    mask_uri, mask_info = None, None
    if broadcast:
        mask_uri, mask_info = broadcast
    elif entry.mask_name:
        mask_uri = f"{part.uri}{KEY_SEPARATOR}{entry.mask_name}"
    else:
        problem = problem or ("no mask given: name the mask column with --mask-column, or "
                              "pass --mask FILE")
    return Item(
        item_id=discover.item_id_for(relative),
        relative_path=relative,
        image_uri=f"{part.uri}{KEY_SEPARATOR}{entry.key}",
        mask_uri=mask_uri,
        # From the listing: a changed part (size, ETag or mtime) redoes all its rows.
        input_fingerprint=discover.fingerprint(part.info, mask_info),
        problem=problem,
        output_uri=f"{part.out_uri}{KEY_SEPARATOR}{entry.key}",
    )
