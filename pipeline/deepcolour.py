"""16 bits per channel colour, which Pillow cannot hold: read and written with tifffile
(TIFF) and OpenCV (PNG), in RGB order, with the metadata Pillow would have kept.

`pipeline.imageio` sends such photos here; everything else stays with Pillow.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import cv2
import numpy as np
import tifffile
from PIL import Image

# Pillow's TIFF compression names, as tifffile spells them (for 16-bit colour TIFFs).
TIFFFILE_COMPRESSION = {"raw": None, "tiff_lzw": "lzw", "tiff_adobe_deflate": "zlib",
                        "tiff_deflate": "zlib", "packbits": "packbits", "tiff_zstd": "zstd"}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXIF_HEADER = b"Exif\x00\x00"


def is_deep_colour(image: Image.Image) -> bool:
    """16 bits per channel colour, which Pillow would silently cut to 8 bits."""
    if image.mode not in ("RGB", "RGBA") or not image.tile:
        return False
    args = image.tile[0].args
    rawmode = args if isinstance(args, str) else (args[0] if args else "")
    return isinstance(rawmode, str) and ";16" in rawmode


def decode(data: bytes, image_format: str | None) -> np.ndarray:
    """HxWx3 or HxWx4 uint16 in stored layout, RGB(A) order; ValueError if unreadable."""
    try:
        if image_format == "TIFF":
            array = tifffile.imread(io.BytesIO(data), key=0)
        else:
            array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if array is None:
                raise ValueError("OpenCV could not decode it")
            code = cv2.COLOR_BGRA2RGBA if array.shape[2] == 4 else cv2.COLOR_BGR2RGB
            array = cv2.cvtColor(array, code)  # OpenCV decodes to BGR order
    except Exception as error:
        raise ValueError(f"cannot decode 16-bit image data: {error}") from None
    if array.dtype != np.uint16 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"unsupported 16-bit layout {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


def to_8bit(array: np.ndarray) -> np.ndarray:
    """16 to 8 bits with rounding (65535 -> 255)."""
    return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def encode_tiff(array: np.ndarray, options: dict[str, Any]) -> bytes:
    compression = TIFFFILE_COMPRESSION.get(options.get("compression", "raw"), "zlib")
    tags = dict(options.get("tiffinfo", {}))
    software = tags.pop(305, False)  # tifffile writes Software itself (its own name by default)
    extratags = [_tiff_tag(tag, value) for tag, value in tags.items()]
    dpi = options.get("dpi")
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer, array, photometric="rgb", compression=compression,
        predictor=compression in ("lzw", "zlib", "zstd") or None,
        extrasamples=("unassalpha",) if array.shape[2] == 4 else None,
        iccprofile=options.get("icc_profile"),
        resolution=tuple(dpi) if dpi else None, resolutionunit="INCH" if dpi else None,
        extratags=[tag for tag in extratags if tag], software=software, metadata=None,
    )
    return buffer.getvalue()


def _tiff_tag(tag: int, value: Any) -> tuple | None:
    if isinstance(value, str):
        return (tag, "s", 0, value, True)
    if isinstance(value, int):
        return (tag, "H", 1, value, True)
    return None  # rational or multi-valued descriptive tags are rare; not carried


def encode_png(array: np.ndarray, options: dict[str, Any]) -> bytes:
    code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(array, code))
    if not ok:
        raise ValueError("OpenCV could not encode the 16-bit PNG")
    return add_png_chunks(encoded.tobytes(), options)


def add_png_chunks(png: bytes, options: dict[str, Any]) -> bytes:
    """Insert the metadata OpenCV does not write (ICC, DPI, EXIF) right after IHDR."""
    chunks = []
    if options.get("icc_profile"):
        chunks.append(png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(options["icc_profile"])))
    if options.get("dpi"):
        per_metre = [round(d / 0.0254) for d in options["dpi"]]
        chunks.append(png_chunk(b"pHYs", struct.pack(">IIB", *per_metre, 1)))
    if options.get("exif"):
        chunks.append(png_chunk(b"eXIf", options["exif"].removeprefix(EXIF_HEADER)))
    for key, value in (options.get("text") or {}).items():
        # iTXt: keyword, NUL, no compression (0, 0), empty language and translation, UTF-8.
        chunks.append(png_chunk(b"iTXt", key.encode("latin-1") + b"\x00\x00\x00\x00\x00"
                                 + value.encode()))
    header_end = len(PNG_SIGNATURE) + 8 + 13 + 4  # signature, IHDR length+type, data, CRC
    return png[:header_end] + b"".join(chunks) + png[header_end:]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
