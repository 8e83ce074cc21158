"""Write a restored JPEG without a generation loss where the fill did not reach: every DCT
block whose footprint holds no changed pixel keeps the original file's quantized
coefficients; a touched block gets the original's plus the quantized DCT of the change.

jpeglib reads and writes the coefficients. `pipeline.imageio.encode_with_note` calls `splice`;
on `CannotSplice` it writes a same-settings re-encode instead, and the manifest says which.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import jpeglib
import numpy as np

COMPONENTS = ("Y", "Cb", "Cr")  # jpeglib's names, also for the R, G, B of an RGB JPEG
# RGB -> YCbCr as JFIF and libjpeg define it; a difference of pixels needs no +128 offset.
YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5],
                  [0.5, -0.418688, -0.081312]])
# JPEG's 8x8 DCT is the orthonormal DCT-II: a block's 64 samples (row by row) are
# IDCT @ its 64 dequantized coefficients (row by row, vertical frequency first).
_DCT_1D = np.array([[np.sqrt((1 if u == 0 else 2) / 8) * np.cos((2 * x + 1) * u * np.pi / 16)
                     for x in range(8)] for u in range(8)])
IDCT = np.kron(_DCT_1D, _DCT_1D).T
SOS, EOI = 0xDA, 0xD9
APP0, APP15, COM = 0xE0, 0xEF, 0xFE
# jpeglib bundles several libjpegs; libjpeg-turbo 2.1 is the one that reads arithmetic
# coding. It reads the frame types below; on lossless or hierarchical frames it calls exit()
# (jpeglib installs no error handler), which would take the worker with it, so those are
# refused before jpeglib sees them.
LIBJPEG = "turbo210"
FRAMES = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive", 0xC9: "arithmetic",
          0xCA: "progressive arithmetic"}
OTHER_FRAMES = {0xC3, 0xC5, 0xC6, 0xC7, 0xCB, 0xCD, 0xCE, 0xCF}
STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length field
# jpeglib keeps APPn/COM segments in a fixed table of 50 and writes past its end beyond that.
MAX_SEGMENTS = 40
# A camera's MPF index points at preview images after the first frame, which we do not write.
MPF = b"MPF\x00"
# Touched blocks re-coded per step: 4096 chroma blocks at 4:2:0 are 13 MB of float pixels.
CHUNK_BLOCKS = 4096
# jpeglib's C side keeps marker tables in globals: one splice at a time per process.
_LIBJPEG = threading.Lock()


class CannotSplice(ValueError):
    """This JPEG is not one we can splice; the message says why, for the manifest."""


def splice(original: bytes, before: np.ndarray, after: np.ndarray,
           changed: np.ndarray) -> tuple[bytes, str]:
    """The JPEG `original` with the change from `before` (its decoded pixels) to `after`
    coded into the blocks it touches; both arrays in stored layout, HxW (gray) or HxWx3,
    and `changed` (HxW bool) where they differ. Returns the bytes and a one-line note for
    the manifest."""
    frame, metadata = header_of(original)
    changed = np.nonzero(changed)
    with _LIBJPEG, tempfile.TemporaryDirectory(prefix="jpegsplice-") as folder:
        jpeg = _read(Path(folder, "original.jpg"), original)
        _check_layout(jpeg, before.shape[:2])
        transform = YCBCR if jpeg.jpeg_color_space.name == "JCS_YCbCr" else np.eye(3)
        recoded = total = 0
        for index in range(jpeg.num_components):
            stored = np.asarray(getattr(jpeg, COMPONENTS[index]))
            coefficients = stored.astype(np.int16)
            factor = jpeg.samp_factor.max(axis=0) // jpeg.samp_factor[index]
            touched = np.argwhere(touched_blocks(changed, factor, stored.shape[:2]))
            for start in range(0, len(touched), CHUNK_BLOCKS):
                part = touched[start:start + CHUNK_BLOCKS]
                rows, columns = part[:, 0], part[:, 1]
                change = block_changes(before, after, part, factor, transform[index])
                coefficients[rows, columns] = requantize(
                    stored[rows, columns], jpeg.get_component_qt(index), change)
                recoded += int((coefficients[rows, columns] != stored[rows, columns]).any(
                    axis=(1, 2)).sum())
            setattr(jpeg, COMPONENTS[index], coefficients)
            total += stored.shape[0] * stored.shape[1]
        jpeg.markers = []  # the original's own segments are copied byte for byte below
        target = Path(folder, "spliced.jpg")
        try:
            jpeg.write_dct(str(target), flags=["+OPTIMIZE_CODING"])
        except OSError:
            raise CannotSplice("libjpeg could not write the coefficients") from None
        coded = target.read_bytes()
    note = f"jpeg splice: {recoded} of {total} blocks re-coded, the rest kept as stored"
    if frame not in ("baseline", "extended"):
        note += f"; {frame} written as baseline Huffman"
    return with_segments(coded, metadata), note


def touched_blocks(changed: tuple[np.ndarray, np.ndarray], factor: np.ndarray,
                   blocks: tuple[int, int]) -> np.ndarray:
    """rows x columns bool: the blocks of one component whose footprint holds one of the
    `changed` pixels (rows, columns). A block covers 8 x 8 samples, which is 8 x factor
    pixels each way: 16x16 for chroma at 4:2:0, 8x8 for luma."""
    touched = np.zeros(blocks, bool)
    touched[changed[0] // (8 * factor[0]), changed[1] // (8 * factor[1])] = True
    return touched


def block_changes(before: np.ndarray, after: np.ndarray, blocks: np.ndarray,
                  factor: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """n x 8 x 8: the change of one component's samples in the given blocks (n x 2 block
    rows and columns), as libjpeg would sample it: pixels past the edge repeat the last
    one, colour becomes the component by `weights`, and each sample is the mean of its
    factor[0] x factor[1] pixels. Only these blocks' pixels are read: a few scratches on a
    40 MP photo cost kilobytes here, not a float copy of the photo."""
    vertical, horizontal = int(factor[0]), int(factor[1])
    height, width = before.shape[:2]
    rows = np.minimum(blocks[:, :1] * 8 * vertical + np.arange(8 * vertical), height - 1)
    columns = np.minimum(blocks[:, 1:] * 8 * horizontal + np.arange(8 * horizontal), width - 1)
    where = (rows[:, :, None], columns[:, None, :])
    delta = after[where].astype(np.int16) - before[where]
    if delta.ndim == 4:
        delta = delta @ weights.astype(np.float32)  # a colour difference needs no +128 offset
    return delta.reshape(len(blocks), 8, vertical, 8, horizontal).mean(axis=(2, 4))


def requantize(stored: np.ndarray, table: np.ndarray, change: np.ndarray) -> np.ndarray:
    """n x 8 x 8 quantized coefficients: the stored ones plus the quantized DCT of the change.

    Quantizing only the change leaves a coefficient as stored wherever the change is below
    half its quantization step, and adds no rounding of the decoded pixels.
    """
    steps = table.reshape(64).astype(np.float64)
    quantized = np.rint(change.reshape(-1, 64) @ IDCT / steps)  # IDCT.T is the forward DCT
    # A baseline Huffman code holds |value| <= 1023; libjpeg exits on more.
    updated = np.clip(stored.reshape(-1, 64) + quantized, -1023, 1023)
    return updated.reshape(-1, 8, 8).astype(np.int16)


def _read(path: Path, data: bytes) -> jpeglib.DCTJPEG:
    if jpeglib.version.get() != LIBJPEG:
        jpeglib.version.set(LIBJPEG)  # process-wide; nothing else here uses jpeglib
    path.write_bytes(data)
    try:
        jpeg = jpeglib.read_dct(str(path))
        jpeg.load()
    except OSError:
        raise CannotSplice("libjpeg could not read the coefficients") from None
    return jpeg


def _check_layout(jpeg: jpeglib.DCTJPEG, shape: tuple) -> None:
    space = jpeg.jpeg_color_space.name.removeprefix("JCS_")
    if space not in ("YCbCr", "RGB", "GRAYSCALE"):
        raise CannotSplice(f"{space} colour space (jpeglib writes no 4th component)")
    if (jpeg.height, jpeg.width) != shape:
        raise CannotSplice("the stored size differs from the photo's")
    sampling = jpeg.samp_factor
    if (sampling.max(axis=0) % sampling).any():
        raise CannotSplice(f"unusual chroma sampling {sampling.tolist()}")


def segments(data: bytes):
    """(marker, start, end) of each segment from SOI up to and including SOS's header."""
    if data[:2] != b"\xff\xd8":
        raise CannotSplice("not a JPEG stream")
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise CannotSplice("malformed JPEG header")
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte before a marker
            position += 1
            continue
        end = position + 2
        if marker not in STANDALONE:
            end += int.from_bytes(data[position + 2:position + 4], "big")
        yield marker, position, end
        if marker in (SOS, EOI):
            return
        position = end
    raise CannotSplice("JPEG header ends before the image data")


def is_metadata(marker: int) -> bool:
    return APP0 <= marker <= APP15 or marker == COM


def header_of(data: bytes) -> tuple[str, list[bytes]]:
    """The frame type, and the APPn/COM segments to copy into the output (EXIF, ICC, XMP,
    JFIF density, Adobe, comments), refusing what jpeglib cannot read safely."""
    frame, metadata = None, []
    for marker, start, end in segments(data):
        segment = data[start:end]
        if is_metadata(marker):
            if not (marker == APP0 + 2 and segment[4:8] == MPF):
                metadata.append(segment)
        elif marker in FRAMES:
            frame = FRAMES[marker]
            if segment[4] != 8:
                raise CannotSplice(f"{segment[4]}-bit samples")
        elif marker in OTHER_FRAMES:
            raise CannotSplice(f"frame type 0x{marker:02X} (lossless or hierarchical coding)")
    if frame is None:
        raise CannotSplice("no frame header before the image data")
    if len(metadata) > MAX_SEGMENTS:
        raise CannotSplice(f"{len(metadata)} metadata segments (jpeglib holds up to 50)")
    return frame, metadata


def with_segments(coded: bytes, metadata: list[bytes]) -> bytes:
    """`coded` with its own APPn/COM segments (the JFIF or Adobe one libjpeg writes)
    replaced by the original's, in the original's order, right after SOI."""
    tables = []
    for marker, start, end in segments(coded):
        if marker == SOS:
            return b"\xff\xd8" + b"".join(metadata) + b"".join(tables) + coded[start:]
        if not is_metadata(marker):
            tables.append(coded[start:end])
    raise CannotSplice("jpeglib wrote no image data")
