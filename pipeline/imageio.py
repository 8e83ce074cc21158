"""Decode photos to arrays and encode restored arrays back, faithful to the original.

The array a method sees is the photo as displayed (EXIF orientation applied); encoding
undoes that so the output keeps the original's pixel layout, orientation tag, EXIF,
ICC profile and DPI. Pixel limits are checked from the header, before decoding.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, JpegImagePlugin

FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "webp": "WEBP"}
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}
# The transpose that shows each EXIF orientation upright (as ImageOps.exif_transpose does),
# and its inverse for the way back to the original's pixel layout.
_TO_DISPLAY = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_FROM_DISPLAY = {
    **_TO_DISPLAY,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


class ImageDecodeError(ValueError):
    """The bytes are not a photo we can restore; the message says why, for the manifest."""


@dataclass
class Photo:
    """Pixels as displayed (HxW or HxWxC, uint8 or uint16) plus what encoding needs back."""

    pixels: np.ndarray
    format: str
    mode: str
    orientation: int = 1
    save_options: dict[str, Any] = field(default_factory=dict)

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
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(f"refused: {error}") from None
    except Exception as error:
        raise ImageDecodeError(f"not a readable image: {error}") from None
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise ImageDecodeError(
            f"refused: {image.width}x{image.height} = {pixels / 1e6:.0f} MP is above the "
            f"limit of {max_pixels / 1e6:.0f} MP (raise --max-pixels to allow it)"
        )
    return image


def decode(data: bytes, max_pixels: int) -> Photo:
    image = open_checked(data, max_pixels)
    try:
        image.load()
    except Exception as error:
        raise ImageDecodeError(f"cannot decode image data: {error}") from None
    orientation = int(image.getexif().get(0x0112, 1) or 1)
    save_options = _save_options(image)
    source_mode = image.mode
    working = _working_mode(image)
    displayed = working.transpose(_TO_DISPLAY[orientation]) if orientation in _TO_DISPLAY else working
    pixels = _to_array(displayed)
    return Photo(pixels, image.format or "PNG", source_mode, orientation, save_options)


def _working_mode(image: Image.Image) -> Image.Image:
    """Bring exotic modes to one a method can fill: L, I;16, RGB or RGBA."""
    if image.mode in ("L", "RGB", "RGBA", "I;16"):
        return image
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I", "I;16B", "I;16L"):
        return Image.fromarray(np.asarray(image).astype(np.uint16))
    if image.mode in ("LA", "PA"):
        return image.convert("RGBA")
    if image.mode == "1":
        return image.convert("L")
    return image.convert("RGB")


def _to_array(image: Image.Image) -> np.ndarray:
    array = np.asarray(image)
    if image.mode == "I;16":
        array = array.astype(np.uint16)
    return np.ascontiguousarray(array)


def _save_options(image: Image.Image) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in ("icc_profile", "dpi", "exif"):
        if image.info.get(key):
            options[key] = image.info[key]
    if image.format == "JPEG":
        # Re-encode with the original quantization tables and subsampling, as
        # Pillow's quality="keep" does, so archives keep their size and quality.
        options["qtables"] = image.quantization
        sampling = JpegImagePlugin.get_sampling(image)
        if sampling != -1:
            options["subsampling"] = sampling
    if image.format == "WEBP":
        options["lossless"] = bool(image.info.get("lossless", False))
    if image.format == "TIFF" and image.info.get("compression"):
        options["compression"] = image.info["compression"]
    return options


def encode(photo: Photo, pixels: np.ndarray, output_format: str | None = None) -> bytes:
    """Encode restored pixels in the original's layout, format and metadata."""
    target = FORMAT_NAMES[output_format] if output_format else photo.format
    image = Image.fromarray(pixels)
    if photo.orientation in _FROM_DISPLAY:
        image = image.transpose(_FROM_DISPLAY[photo.orientation])
    options = dict(photo.save_options) if target == photo.format else _portable(photo)
    if target == "JPEG" and image.mode == "RGBA":
        raise ImageDecodeError("JPEG cannot store an alpha channel; use --format png")
    if target == "WEBP" and "lossless" not in options:
        options["lossless"] = True
    buffer = io.BytesIO()
    image.save(buffer, format=target, **options)
    return buffer.getvalue()


def _portable(photo: Photo) -> dict[str, Any]:
    return {k: v for k, v in photo.save_options.items() if k in ("icc_profile", "dpi", "exif")}


def extension_for(photo_format: str) -> str:
    return EXTENSIONS.get(photo_format, ".png")
