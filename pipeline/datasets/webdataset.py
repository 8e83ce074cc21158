"""WebDataset tar shards: a sample is the members sharing a key, `KEY.EXT`.

The key is a member's name up to the first dot of its file name (WebDataset's rule), so
`a/0001.jpg` and `a/0001.mask.png` are the photo and mask of sample `a/0001`. The photo
is the member with an image extension (jpg, png, tif, webp, ...; or `--image-column EXT`),
its mask `KEY.mask.<image extension>` (or `--mask-column EXT`). Samples without an image
member (captions alone) are not photos and are left out, as loose non-image files are.
The output shard keeps each restored sample's members in order, the photo's bytes
replaced (and its extension, with `--format`); failed samples are left out.
"""

from __future__ import annotations

import copy
import io
import posixpath
import tarfile
from dataclasses import dataclass

from pipeline import imageio, storage
from pipeline.discover import IMAGE_EXTENSIONS, UsageError
from pipeline.settings import RunSettings

IMAGE_EXTS = frozenset(extension.lstrip(".") for extension in IMAGE_EXTENSIONS)
MASK_PREFIX = "mask."
# Read size when the driver walks a shard's headers: tarfile seeks past each member's data.
HEADER_BLOCK = 256 * 1024


def split_name(name: str) -> tuple[str, str]:
    """`(key, extension)`: `a/0001.mask.png` -> `('a/0001', 'mask.png')`."""
    folder, base = posixpath.split(name)
    stem, _, extension = base.partition(".")
    return posixpath.join(folder, stem), extension


@dataclass
class Sample:
    key: str
    members: list[str]
    image: str | None = None
    mask: str | None = None
    problem: str | None = None


def samples_of(names: list[str], settings: RunSettings, where: str) -> list[Sample]:
    """The photo samples among a shard's member names, in shard order."""
    grouped: dict[str, Sample] = {}
    for name in names:
        key, extension = split_name(name)
        if extension:
            grouped.setdefault(key, Sample(key, [])).members.append(name)
    photos = []
    for sample in grouped.values():
        images = [n for n in sample.members if _is_image(split_name(n)[1], settings)]
        if not images:
            continue
        masks = [n for n in sample.members if _is_mask(split_name(n)[1], settings)]
        sample.image, sample.mask = images[0], (masks[0] if masks else None)
        if len(images) > 1:
            sample.problem = (f"{sample.key} has several images in {where} "
                              f"({', '.join(images)}): choose one with --image-column EXT")
        elif len(masks) > 1:
            sample.problem = (f"{sample.key} has several masks in {where} "
                              f"({', '.join(masks)}): choose one with --mask-column EXT")
        elif not masks and not settings.mask:
            wanted = settings.mask_column or f"{MASK_PREFIX}*"
            sample.problem = f"no mask member {sample.key}.{wanted} in {where}"
        photos.append(sample)
    return photos


def _is_image(extension: str, settings: RunSettings) -> bool:
    if settings.image_column:
        return extension == settings.image_column
    return extension.lower() in IMAGE_EXTS


def _is_mask(extension: str, settings: RunSettings) -> bool:
    if settings.mask:  # one mask file for every photo
        return False
    if settings.mask_column:
        return extension == settings.mask_column
    lower = extension.lower()
    return lower.startswith(MASK_PREFIX) and lower[len(MASK_PREFIX):] in IMAGE_EXTS


def _names(tar: tarfile.TarFile) -> list[str]:
    return [member.name for member in tar if member.isfile()]


def scan(fs, path: str, settings: RunSettings) -> list:
    """The samples of one shard as the driver sees them, from its member headers alone."""
    from pipeline.datasets.plan import Entry

    where = storage.full_uri(fs, path)
    if settings.mask_column and settings.mask:
        raise UsageError("give either --mask-column or --mask, not both")

    def read() -> list[str]:
        with fs.open(path, "rb", block_size=HEADER_BLOCK) as stream, tarfile.open(
                fileobj=stream, mode="r:") as tar:
            return _names(tar)

    try:
        names = storage.with_retries(read, f"read {where}")
    except Exception as error:
        raise UsageError(f"cannot read the tar shard {where}: {type(error).__name__}: "
                         f"{error}") from None
    return [Entry(sample.key, sample.mask, sample.problem)
            for sample in samples_of(names, settings, where)]


def _open(data: bytes) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:")


def read_samples(data: bytes, settings: RunSettings) -> dict[str, tuple]:
    """`{key: (image bytes, mask bytes or None)}` of one shard."""
    with _open(data) as tar:
        found = {}
        for sample in samples_of(_names(tar), settings, "shard"):
            image = tar.extractfile(sample.image).read()
            mask = tar.extractfile(sample.mask).read() if sample.mask else None
            found[sample.key] = (image, mask)
        return found


def keys_of(data: bytes, settings: RunSettings) -> set[str]:
    with _open(data) as tar:
        return {sample.key for sample in samples_of(_names(tar), settings, "output shard")}


def write_part(data: bytes, settings: RunSettings, outputs: dict[str, bytes],
               old: bytes | None, carried: set[str]) -> bytes:
    """The output shard: the samples restored now (`outputs`) or before (`carried`, taken
    whole from the `old` output shard), in input order."""
    buffer = io.BytesIO()
    with _open(data) as source, tarfile.open(fileobj=buffer, mode="w") as target:
        previous = _open(old) if carried else None
        earlier = ({s.key: s for s in samples_of(_names(previous), settings, "output shard")}
                   if previous else {})
        for sample in samples_of(_names(source), settings, "shard"):
            if sample.key in outputs:
                _copy_restored(source, target, sample, outputs[sample.key], settings)
            elif sample.key in carried:
                for name in earlier[sample.key].members:
                    member = previous.getmember(name)
                    target.addfile(member, previous.extractfile(member))
        if previous:
            previous.close()
    return buffer.getvalue()


def _copy_restored(source: tarfile.TarFile, target: tarfile.TarFile, sample: Sample,
                   restored: bytes, settings: RunSettings) -> None:
    for name in sample.members:
        member = source.getmember(name)
        if name != sample.image:
            target.addfile(member, source.extractfile(member))
            continue
        info = copy.copy(member)  # same mode, owner and mtime: a replay writes equal bytes
        info.name, info.size = _restored_name(name, settings), len(restored)
        target.addfile(info, io.BytesIO(restored))


def _restored_name(name: str, settings: RunSettings) -> str:
    if not settings.output_format:
        return name
    key, _ = split_name(name)
    extension = imageio.EXTENSIONS[imageio.FORMAT_NAMES[settings.output_format]]
    return key + extension
