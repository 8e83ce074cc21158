"""Decode photos to arrays and encode restored arrays back, faithful to the original.

The array a method sees is the photo as displayed (EXIF orientation applied); encoding
undoes that so the output keeps the original's pixel layout, orientation tag, EXIF,
ICC profile and DPI. Pixel limits are checked from the header, before decoding.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tifffile
from PIL import Image, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

from pipeline import deepcolour, jpegsplice, tiffexif
from pipeline.deepcolour import is_deep_colour, to_8bit

# Pillow's own bomb guard refuses above 2 x 89 MP whatever --max-pixels says; the limit
# is ours to set, and `open_checked` enforces it from the header for every format.
Image.MAX_IMAGE_PIXELS = None

FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "webp": "WEBP"}
# Formats a restored photo can be written back in without changing what it is.
WRITABLE = ("PNG", "JPEG", "TIFF", "WEBP", "BMP")
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}
ORIENTATION_TAG = 0x0112
# Baseline TIFF tags that describe the photo rather than its storage; they are copied to
# a restored TIFF (storage tags such as strip offsets are the encoder's business).
TIFF_DESCRIPTIVE_TAGS = (269, 270, 271, 272, 274, 285, 305, 306, 315, 316, 33432)
# Camera JPEGs with a preview image open as MPO; the restored photo is their first frame.
FORMAT_ALIASES = {"MPO": "JPEG"}
PALETTE_CHUNK = 16_384  # colours matched per step: 16k x 256 entries x 3 x 4 B = 50 MB


class ImageDecodeError(ValueError):
    """The bytes are not a photo we can restore; the message says why, for the manifest."""


@dataclass
class Photo:
    """Pixels as displayed (HxW or HxWxC, uint8 or uint16) plus what encoding needs back.

    `source` holds the original samples (displayed orientation) of modes whose working
    form is not a lossless view of them (palette indices, CMYK): encoding keeps those
    samples wherever the method left a pixel as it was. `original` holds a JPEG's file
    bytes, whose coefficients encoding keeps wherever the fill touched no block.
    """

    pixels: np.ndarray
    format: str
    mode: str
    orientation: int = 1
    save_options: dict[str, Any] = field(default_factory=dict)
    source: np.ndarray | None = None
    palette: list[int] | None = None
    original: bytes | None = field(default=None, repr=False)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open image bytes lazily and refuse empty files and decompression bombs up front."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:  # its own text shows the BytesIO object, not the file
        raise ImageDecodeError("not a readable image (no image format Pillow knows)") from None
    except Exception as error:
        raise ImageDecodeError(f"not a readable image: {error}") from None
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise ImageDecodeError(
            f"refused: {image.width}x{image.height} = {pixels / 1e6:.0f} MP is above the "
            f"limit of {max_pixels / 1e6:.0f} MP (raise --max-pixels to allow it)"
        )
    return image


def decode(data: bytes, max_pixels: int, opened: Image.Image | None = None) -> Photo:
    """The photo in `data`; `opened` is `open_checked(data, max_pixels)` where the caller
    has it already (it looked at the size first)."""
    image = opened if opened is not None else open_checked(data, max_pixels)
    deep = is_deep_colour(image)  # before anything loads the pixels and drops the tiles
    orientation = _orientation(image)
    image_format = FORMAT_ALIASES.get(image.format, image.format) or "PNG"
    options = _save_options(image, image_format, data)
    if deep:
        try:
            stored = deepcolour.decode(data, image_format)
        except ValueError as error:
            raise ImageDecodeError(str(error)) from None
        return Photo(orient(stored, orientation), image_format, image.mode, orientation, options)
    if is_rgbi(image):
        source = orient(_rgbi_samples(data), orientation)
        return Photo(np.ascontiguousarray(source[:, :, :3]), image_format, "RGBX", orientation,
                     options, source)
    try:
        image.load()
    except Exception as error:
        raise ImageDecodeError(f"cannot decode image data: {error}") from None
    if image_format == "PNG":
        options["text"] = dict(image.text)  # text after the pixels is only known now
    working, source, palette = _working_arrays(image)
    if not _pillow_oriented(image, orientation):
        working = orient(working, orientation)
        source = orient(source, orientation) if source is not None else None
    original = data if image_format == "JPEG" else None
    return Photo(working, image_format, image.mode, orientation, options, source, palette,
                 original)


def is_rgbi(image: Image.Image) -> bool:
    """An 8-bit RGB TIFF with a fourth, 'unspecified' extra sample (a film scanner's
    infrared channel), which Pillow reads as plain RGB, dropping that sample."""
    tags = getattr(image, "tag_v2", None)
    return (tags is not None and image.mode == "RGB" and tags.get(277) == 4
            and tuple(tags.get(338, ())) == (0,) and tuple(tags.get(258, ())) == (8,) * 4)


def _rgbi_samples(data: bytes) -> np.ndarray:
    """HxWx4 uint8 stored samples of an 8-bit RGBI TIFF."""
    try:
        samples = rgbi_samples(data)
    except Exception as error:
        raise ImageDecodeError(f"cannot decode image data: {error}") from None
    if samples is None or samples.dtype != np.uint8 or samples.ndim != 3:
        layout = "none" if samples is None else f"{samples.dtype} {samples.shape}"
        raise ImageDecodeError(f"unsupported RGBI layout {layout}")
    return samples


def rgbi_samples(data: bytes) -> np.ndarray | None:
    """HxWx4 stored samples, any depth, of a TIFF whose 4th sample is declared
    'unspecified' (film scanners write their infrared channel so), read with tifffile;
    None for any other file."""
    if data[:4] not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return None
    with tifffile.TiffFile(io.BytesIO(data)) as tiff:
        page = tiff.pages[0]
        extra = page.extrasamples or ()
        if page.samplesperpixel != 4 or len(extra) != 1 or extra[0] != 0:
            return None
        samples = page.asarray()
        if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
            samples = np.moveaxis(samples, 0, -1)
    return np.ascontiguousarray(samples)


def _orientation(image: Image.Image) -> int:
    try:
        value = int(image.getexif().get(ORIENTATION_TAG, 1) or 1)
    except Exception:
        return 1  # a broken EXIF block is no reason to refuse the photo
    return value if 1 <= value <= 8 else 1


def _pillow_oriented(image: Image.Image, orientation: int) -> bool:
    """Pillow >= 11 applies a TIFF's orientation itself on load and drops the tag then."""
    tags = getattr(image, "tag_v2", None)
    return orientation != 1 and tags is not None and ORIENTATION_TAG not in tags


def orient(array: np.ndarray, orientation: int, inverse: bool = False) -> np.ndarray:
    """Turn stored pixels into displayed ones per the EXIF orientation (or back)."""
    if orientation in (6, 8) and inverse:
        orientation = 14 - orientation  # a quarter turn's inverse is the other quarter turn
    if orientation == 2:
        array = array[:, ::-1]
    elif orientation == 3:
        array = array[::-1, ::-1]
    elif orientation == 4:
        array = array[::-1]
    elif orientation == 5:
        array = array.swapaxes(0, 1)
    elif orientation == 6:
        array = np.rot90(array, -1)
    elif orientation == 7:
        array = np.rot90(array, 2).swapaxes(0, 1)
    elif orientation == 8:
        array = np.rot90(array, 1)
    return np.ascontiguousarray(array)


def _working_arrays(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None, list | None]:
    """The array a method can fill (L, I;16, RGB or RGBA), plus the original samples and
    palette where that array is not a lossless view of them."""
    mode = image.mode
    if mode in ("L", "RGB", "RGBA"):
        return np.asarray(image), None, None
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16), None, None
    if mode == "I":
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ImageDecodeError("32-bit integer images beyond 16-bit range are not supported")
        return values.astype(np.uint16), None, None
    if mode == "F":
        raise ImageDecodeError("floating-point images are not supported")
    if mode == "P" and "transparency" not in image.info:
        return np.asarray(image.convert("RGB")), np.asarray(image), image.getpalette()
    if mode == "CMYK":
        return np.asarray(image.convert("RGB")), np.asarray(image), None
    if mode in ("LA", "La", "PA", "P", "RGBa"):
        return np.asarray(image.convert("RGBA")), None, None
    if mode == "1":
        return np.asarray(image.convert("L")), None, None
    return np.asarray(image.convert("RGB")), None, None


def _save_options(image: Image.Image, image_format: str, data: bytes) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in ("icc_profile", "dpi", "exif"):
        if image.info.get(key):
            options[key] = image.info[key]
    if image_format == "JPEG":
        # Re-encode with the original quantization tables and subsampling, as
        # Pillow's quality="keep" does, so archives keep their size and quality.
        options["qtables"] = image.quantization
        sampling = JpegImagePlugin.get_sampling(image)
        if sampling != -1:
            options["subsampling"] = sampling
        if image.info.get("progressive"):
            options["progressive"] = True
        for key in ("comment", "xmp"):
            if image.info.get(key):
                options[key] = image.info[key]
    if image_format == "WEBP":
        options["lossless"] = is_lossless_webp(data)
        if not options["lossless"]:
            options["quality"] = 90  # the original's quality is not recorded in the file
        if image.info.get("xmp"):
            options["xmp"] = image.info["xmp"]
    if image_format == "PNG":
        options["text"] = {k: v for k, v in image.info.items() if isinstance(v, str)}
    if image_format == "TIFF":
        options.pop("exif", None)  # a TIFF's EXIF is its own tags: see tiffinfo
        options["compression"] = image.info.get("compression", "raw")
        options["tiffinfo"] = {tag: image.tag_v2[tag] for tag in TIFF_DESCRIPTIVE_TAGS
                               if tag in image.tag_v2}
        if any(tag in image.tag_v2 for tag in tiffexif.SUB_IFDS):
            options["sub_ifds"] = tiffexif.sub_ifds(data)
    return options


def is_lossless_webp(data: bytes) -> bool:
    """Walk the RIFF chunks: a VP8L image chunk means lossless, VP8 lossy."""
    position = 12
    while position + 8 <= len(data):
        name = data[position:position + 4]
        if name in (b"VP8L", b"VP8 "):
            return name == b"VP8L"
        size = struct.unpack("<I", data[position + 4:position + 8])[0]
        position += 8 + size + (size & 1)
    return False


def check_writable(photo: Photo, output_format: str | None) -> None:
    """Refuse, before any work, a photo whose own format cannot be written back faithfully
    (GIF: a palette of 256 colours, frames) unless `output_format` names one that can."""
    target = FORMAT_NAMES[output_format] if output_format else photo.format
    if target not in WRITABLE:
        raise ImageDecodeError(
            f"{target} cannot be written back faithfully; pass --format png (or jpeg, tiff, "
            f"webp) to restore its first frame in that format")


def encode(photo: Photo, pixels: np.ndarray, output_format: str | None = None) -> bytes:
    """Encode restored pixels in the original's layout, format and metadata."""
    return encode_with_note(photo, pixels, output_format)[0]


def encode_with_note(photo: Photo, pixels: np.ndarray,
                     output_format: str | None = None) -> tuple[bytes, str | None]:
    """`encode`, plus a line for the manifest on how a JPEG was written: spliced (blocks
    the fill did not touch keep their stored coefficients) or re-encoded, and why."""
    same_format = not output_format or FORMAT_NAMES[output_format] == photo.format
    if photo.original is None or not same_format:
        return _encoded(photo, pixels, output_format), None
    before = orient(photo.pixels, photo.orientation, inverse=True)
    after = orient(pixels, photo.orientation, inverse=True)
    try:
        return jpegsplice.splice(photo.original, before, after, changed_pixels(before, after))
    except jpegsplice.CannotSplice as reason:
        note = f"jpeg re-encoded with the original's tables, not spliced: {reason}"
        return _encoded(photo, pixels, output_format), note


def _encoded(photo: Photo, pixels: np.ndarray, output_format: str | None) -> bytes:
    check_writable(photo, output_format)
    target = FORMAT_NAMES[output_format] if output_format else photo.format
    if target == "JPEG" and pixels.ndim == 3 and pixels.shape[2] == 4:
        raise ImageDecodeError("JPEG cannot store an alpha channel; use --format png")
    options = dict(photo.save_options) if target == photo.format else _portable(photo, target)
    sub_ifds = options.pop("sub_ifds", None)  # only a TIFF written back as TIFF has them
    if sub_ifds:
        return tiffexif.with_sub_ifds(_encoded_with(photo, pixels, target, options), sub_ifds)
    return _encoded_with(photo, pixels, target, options)


def _encoded_with(photo: Photo, pixels: np.ndarray, target: str, options: dict) -> bytes:
    array, mode = _back_to_source(photo, pixels, target)
    array = orient(array, photo.orientation, inverse=True)
    if array.dtype == np.uint16 and array.ndim == 3:
        if target == "TIFF":
            return deepcolour.encode_tiff(array, options)
        if target == "PNG":
            return deepcolour.encode_png(array, options)
    if array.dtype == np.uint16 and target in ("JPEG", "WEBP"):
        array = to_8bit(array)  # neither format holds 16 bits
    image = _to_image(array, mode, photo.palette)
    if target == "WEBP" and "lossless" not in options:
        options["lossless"] = True
    text = options.pop("text", None)
    if text and target == "PNG":
        options["pnginfo"] = PngImagePlugin.PngInfo()
        for key, value in text.items():
            options["pnginfo"].add_itxt(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format=target, **options)
    return buffer.getvalue()


def _back_to_source(photo: Photo, pixels: np.ndarray, target: str) -> tuple[np.ndarray, str]:
    """Return the array to encode and its Pillow mode, back in the original's mode where
    the target format can hold it; original samples are kept wherever the fill did not
    change the pixel."""
    if photo.mode == "P" and photo.source is not None and target in ("PNG", "TIFF"):
        changed = changed_pixels(photo.pixels, pixels)
        indices = photo.source.copy()
        indices[changed] = nearest_palette_index(pixels[changed], photo.palette)
        return indices, "P"
    if photo.mode == "CMYK" and photo.source is not None and target in ("JPEG", "TIFF"):
        samples = photo.source.copy()
        changed = changed_pixels(photo.pixels, pixels)
        if not changed.any():
            return samples, "CMYK"
        filled = Image.fromarray(np.ascontiguousarray(pixels[changed][None]))
        samples[changed] = np.asarray(filled.convert("CMYK"))[0]
        return samples, "CMYK"
    if photo.mode == "RGBX" and target == "TIFF":
        samples = photo.source.copy()  # the extra (infrared) sample is kept as it was
        samples[:, :, :3] = pixels
        return samples, "RGBX"
    if photo.mode in ("LA", "La") and target in ("PNG", "TIFF", "WEBP"):
        return pixels, "LA"
    if photo.mode == "1" and target in ("PNG", "TIFF"):
        return pixels, "1"
    return pixels, ""


def changed_pixels(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """HxW bool: where the method changed any channel (inside the hole, by contract).
    Channel by channel: numpy's any() over a 3-long last axis is slow on a 40 MP photo."""
    if before.ndim == 2:
        return before != after
    changed = before[:, :, 0] != after[:, :, 0]
    for channel in range(1, before.shape[2]):
        changed |= before[:, :, channel] != after[:, :, channel]
    return changed


def nearest_palette_index(colours: np.ndarray, palette: list[int]) -> np.ndarray:
    """Index of the nearest palette entry (RGB distance) for each colour, no dithering."""
    entries = np.asarray(palette, np.int32).reshape(-1, 3)
    indices = np.empty(len(colours), np.uint8)
    for start in range(0, len(colours), PALETTE_CHUNK):
        chunk = colours[start:start + PALETTE_CHUNK, None, :].astype(np.int32)
        indices[start:start + PALETTE_CHUNK] = ((chunk - entries[None]) ** 2).sum(2).argmin(1)
    return indices


def _to_image(array: np.ndarray, mode: str, palette: list[int] | None) -> Image.Image:
    if mode == "P":
        image = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
        image.putpalette(palette)
        return image
    if mode in ("CMYK", "RGBX"):
        return Image.frombytes(mode, (array.shape[1], array.shape[0]), array.tobytes())
    image = Image.fromarray(array)
    if mode == "LA":
        return image.convert("LA")  # gray pixels convert back exactly (weights sum to 1)
    if mode == "1":
        return image.convert("1", dither=Image.Dither.NONE)
    return image


def _portable(photo: Photo, target: str) -> dict[str, Any]:
    """Metadata that survives a change of format (--format)."""
    options = {k: v for k, v in photo.save_options.items() if k in ("icc_profile", "dpi", "exif")}
    if photo.mode == "CMYK" and target not in ("JPEG", "TIFF"):
        options.pop("icc_profile", None)  # a CMYK profile does not describe the RGB written
    if target == "TIFF":
        orientation = {ORIENTATION_TAG: photo.orientation} if photo.orientation != 1 else {}
        options.pop("exif", None)
        options["tiffinfo"] = orientation
    elif photo.format == "TIFF" and photo.orientation != 1:
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = photo.orientation
        options["exif"] = exif.tobytes()
    return options


def extension_for(photo_format: str) -> str:
    return EXTENSIONS.get(photo_format, ".png")
