"""A TIFF's EXIF and GPS sub-IFDs (camera settings, capture time, location), which neither
Pillow nor tifffile writes back from a TIFF they read: tifftools reads them from the
original and puts them into the restored file's first IFD, byte types and all.
"""

from __future__ import annotations

import io
from typing import Any

import tifftools

# ExifIFD and GPSIFD pointers; the Interoperability IFD lives inside ExifIFD.
SUB_IFDS = (34665, 34853)


def sub_ifds(data: bytes) -> dict[int, Any]:
    """The original's EXIF/GPS sub-IFD records, as tifftools holds them; {} if unreadable."""
    try:
        tags = tifftools.read_tiff(io.BytesIO(data))["ifds"][0]["tags"]
    except Exception:
        return {}  # a broken EXIF block is no reason to refuse the photo
    return {tag: tags[tag] for tag in SUB_IFDS if tag in tags}


def with_sub_ifds(tiff: bytes, records: dict[int, Any]) -> bytes:
    """`tiff` (as Pillow or tifffile wrote it) with `records` added to its first IFD.

    tifftools rewrites the file, copying the image data as it is: one more copy of the
    file in memory, for photos that carry such sub-IFDs only.
    """
    info = tifftools.read_tiff(io.BytesIO(tiff))
    info["ifds"][0]["tags"].update(records)
    buffer = io.BytesIO()
    tifftools.write_tiff(info, buffer)
    return buffer.getvalue()
