"""Write a restored JPEG without a generation loss where the fill did not reach: every DCT
block whose footprint holds no changed pixel keeps the original file's quantized
coefficients; a touched block gets the original's plus the quantized DCT of the change.

jpeglib reads and writes the coefficients. `pipeline.imageio.encode` calls `splice` and, on
`CannotSplice`, writes a same-settings re-encode instead; the manifest says which.
"""

from __future__ import annotations

import tempfile
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


class CannotSplice(ValueError):
    """This JPEG is not one we can splice; the message says why, for the manifest."""


def splice(original: bytes, before: np.ndarray, after: np.ndarray) -> tuple[bytes, str]:
    """The JPEG `original` with the change from `before` (its decoded pixels) to `after`
    coded into the blocks it touches; both arrays in stored layout, HxW (gray) or HxWx3.
    Returns the bytes and a one-line note for the manifest."""
    frame, metadata = header_of(original)
    changed = before != after
    changed = changed.any(axis=2) if changed.ndim == 3 else changed
    with tempfile.TemporaryDirectory(prefix="jpegsplice-") as folder:
        jpeg = _read(Path(folder, "original.jpg"), original)
        _check_layout(jpeg, changed.shape)
        recoded = total = 0
        transform = YCBCR if jpeg.jpeg_color_space.name == "JCS_YCbCr" else np.eye(3)
        for index, delta in enumerate(component_deltas(before, after, transform)):
            name = COMPONENTS[index]
            factor = jpeg.samp_factor.max(axis=0) // jpeg.samp_factor[index]
            stored = np.asarray(getattr(jpeg, name))
            coefficients = recode(stored, jpeg.get_component_qt(index), delta, changed, factor)
            setattr(jpeg, name, coefficients)
            recoded += int((coefficients != stored).any(axis=(2, 3)).sum())
            total += stored.shape[0] * stored.shape[1]
        jpeg.markers = []  # the original's own segments are copied byte for byte below
        target = Path(folder, "spliced.jpg")
        jpeg.write_dct(str(target), flags=["+OPTIMIZE_CODING"])
        coded = target.read_bytes()
    note = f"jpeg splice: {recoded} of {total} blocks re-coded, the rest kept as stored"
    if frame not in ("baseline", "extended"):
        note += f"; {frame} written as baseline Huffman"
    return with_segments(coded, metadata), note


def component_deltas(before: np.ndarray, after: np.ndarray,
                     transform: np.ndarray) -> list[np.ndarray]:
    """The change per JPEG component (Y, Cb, Cr; R, G, B; or gray) at full resolution."""
    delta = after.astype(np.float64) - before
    if delta.ndim == 2:
        return [delta]
    return list(np.moveaxis(delta @ transform.T, 2, 0))


def recode(stored: np.ndarray, table: np.ndarray, delta: np.ndarray, changed: np.ndarray,
           factor: np.ndarray) -> np.ndarray:
    """One component's blocks (rows x columns x 8 x 8): as stored where no changed pixel
    falls in a block's footprint, else stored plus the quantized DCT of the change.

    Quantizing only the change keeps a touched block's coefficients as stored wherever the
    change is below half a quantization step, and adds no rounding of the decoded pixels.
    """
    blocks = stored.shape[:2]
    touched = blocks_of(downsample(changed, factor, blocks) > 0).any(axis=(2, 3))
    coefficients = np.array(stored, dtype=np.int16)
    if touched.any():
        change = blocks_of(downsample(delta, factor, blocks))[touched].reshape(-1, 64)
        steps = table.reshape(64).astype(np.float64)
        quantized = np.rint(change @ IDCT / steps)  # IDCT.T is the forward DCT
        limit = np.floor(1023 / steps)  # the most a baseline Huffman code holds
        updated = np.clip(coefficients[touched].reshape(-1, 64) + quantized, -limit, limit)
        coefficients[touched] = updated.reshape(-1, 8, 8).astype(np.int16)
    return coefficients


def downsample(plane: np.ndarray, factor: np.ndarray, blocks: tuple[int, int]) -> np.ndarray:
    """`plane` at one component's resolution over its blocks' whole footprint: each sample
    the mean of its factor[0] x factor[1] pixels, edges padded by replication, as libjpeg
    does (16x16 pixels per block for chroma at 4:2:0, 8x8 for luma)."""
    vertical, horizontal = int(factor[0]), int(factor[1])
    height, width = blocks[0] * 8 * vertical, blocks[1] * 8 * horizontal
    plane = plane[:height, :width].astype(np.float64)
    plane = np.pad(plane, ((0, height - plane.shape[0]), (0, width - plane.shape[1])), "edge")
    return plane.reshape(height // vertical, vertical, width // horizontal, horizontal).mean(
        axis=(1, 3))


def blocks_of(samples: np.ndarray) -> np.ndarray:
    """rows*8 x columns*8 samples as rows x columns x 8 x 8 blocks."""
    rows, columns = samples.shape[0] // 8, samples.shape[1] // 8
    return samples.reshape(rows, 8, columns, 8).swapaxes(1, 2)


def _read(path: Path, data: bytes) -> jpeglib.DCTJPEG:
    if jpeglib.version.get() != LIBJPEG:
        jpeglib.version.set(LIBJPEG)  # process-wide; nothing else here uses jpeglib
    path.write_bytes(data)
    jpeg = jpeglib.read_dct(str(path))
    jpeg.load()
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
