"""Fidelity round trips: encode a real photo, restore it, decode the result independently.

Every case goes bytes -> `imageio.decode` -> a real method -> `imageio.encode` -> bytes,
then reads the output with Pillow, tifffile or OpenCV (not with our decoder) and checks
format, mode, bit depth, metadata and the pixels outside the hole.
"""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
import pytest
import tifffile
import tifftools
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, TiffImagePlugin

from pipeline import deepcolour, imageio, restore_items
from pipeline.masks import synthetic_mask
from pipeline.methods import load_method
from pipeline.settings import RunSettings
from tests.conftest import save_mask, small_photo

# Navier-Stokes: OpenCV 5's Telea fills float input with noise (notes/bug-telea-float32.md).
FILL = load_method("ns", {})
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def rgb() -> np.ndarray:
    return small_photo("chelsea", 64)  # 43x64 RGB


def deep(channels: int = 3) -> np.ndarray:
    """16-bit colour with detail below the 8-bit step, so a cut to 8 bits would show."""
    photo = rgb().astype(np.uint16) * 250 + np.arange(64, dtype=np.uint16)[None, :, None]
    if channels == 4:
        photo = np.dstack([photo, np.linspace(1000, 65000, 64, dtype=np.uint16)[None].repeat(
            photo.shape[0], 0)])
    return photo


def encoded(array: np.ndarray | Image.Image, image_format: str, **options) -> bytes:
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def hole_for(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return synthetic_mask("strokes", shape[0], shape[1], seed=seed)


def restore(data: bytes, output_format: str | None = None, seed: int = 1):
    photo = imageio.decode(data, max_pixels=10_000_000)
    mask = hole_for(photo.pixels.shape, seed)
    filled = FILL(photo.pixels, mask).pixels
    return photo, mask, imageio.encode(photo, filled, output_format)


def samples(data: bytes) -> np.ndarray:
    """Stored samples as an independent reader sees them (palette indices stay indices)."""
    return np.asarray(Image.open(io.BytesIO(data)))


# Lossless inputs: (format, how to build the image, Pillow save options).
LOSSLESS = {
    "png-L": ("PNG", lambda: Image.fromarray(rgb()).convert("L"), {}),
    "png-I;16": ("PNG", lambda: Image.fromarray(deep()[:, :, 1]), {}),
    "png-RGB": ("PNG", lambda: Image.fromarray(rgb()), {}),
    "png-RGBA": ("PNG", lambda: Image.fromarray(np.dstack([rgb(), rgb()[:, :, 0]])), {}),
    "png-LA": ("PNG", lambda: Image.fromarray(np.dstack([rgb()[:, :, 0], rgb()[:, :, 1]])), {}),
    "png-P": ("PNG", lambda: Image.fromarray(rgb()).quantize(64, dither=Image.Dither.NONE), {}),
    "png-1": ("PNG", lambda: Image.fromarray(rgb()[:, :, 0] > 100), {}),
    "tiff-L": ("TIFF", lambda: Image.fromarray(rgb()).convert("L"), {}),
    "tiff-I;16": ("TIFF", lambda: Image.fromarray(deep()[:, :, 1]), {}),
    "tiff-RGB-lzw": ("TIFF", lambda: Image.fromarray(rgb()), {"compression": "tiff_lzw"}),
    "tiff-RGBA": ("TIFF", lambda: Image.fromarray(np.dstack([rgb(), rgb()[:, :, 0]])), {}),
    "tiff-CMYK": ("TIFF", lambda: Image.fromarray(rgb()).convert("CMYK"), {}),
    "webp-RGB-lossless": ("WEBP", lambda: Image.fromarray(rgb()), {"lossless": True}),
    "webp-RGBA-lossless": ("WEBP", lambda: Image.fromarray(np.dstack([rgb(), rgb()[:, :, 0]])),
                           {"lossless": True}),
}


@pytest.mark.parametrize("case", sorted(LOSSLESS))
def test_lossless_round_trip_keeps_format_mode_and_pixels_outside_the_hole(case):
    image_format, build, options = LOSSLESS[case]
    source = build()
    data = encoded(source, image_format, **options)
    photo, mask, out = restore(data)
    result = Image.open(io.BytesIO(out))
    assert result.format == image_format
    assert result.mode == Image.open(io.BytesIO(data)).mode
    before, after = samples(data), samples(out)
    assert after.dtype == before.dtype and after.shape == before.shape
    assert (after[~mask] == before[~mask]).all(), "pixels outside the hole changed"
    assert (after[mask] != before[mask]).any(), "nothing was filled"
    if case.startswith("webp"):
        assert imageio.is_lossless_webp(out)


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_colour_is_filled_and_written_back_at_16_bits(image_format, channels):
    source = deep(channels)
    buffer = io.BytesIO()
    if image_format == "TIFF":
        tifffile.imwrite(buffer, source, photometric="rgb", compression="zlib",
                         extrasamples=("unassalpha",) if channels == 4 else None,
                         resolution=(300, 300), resolutionunit="INCH", iccprofile=SRGB)
    else:
        code = cv2.COLOR_RGBA2BGRA if channels == 4 else cv2.COLOR_RGB2BGR
        buffer.write(cv2.imencode(".png", cv2.cvtColor(source, code))[1].tobytes())
    photo, mask, out = restore(buffer.getvalue())
    assert photo.pixels.dtype == np.uint16
    if image_format == "TIFF":
        after = tifffile.imread(io.BytesIO(out))
    else:
        code = cv2.COLOR_BGRA2RGBA if channels == 4 else cv2.COLOR_BGR2RGB
        after = cv2.cvtColor(cv2.imdecode(np.frombuffer(out, np.uint8), -1), code)
    assert after.dtype == np.uint16 and after.shape == source.shape
    assert (after[~mask] == source[~mask]).all()
    assert (after[mask] % 257 != 0).any(), "the fill was cut to 8 bits"
    if channels == 4:
        assert (after[:, :, 3] == source[:, :, 3]).all(), "alpha must be kept as it was"
    reopened = Image.open(io.BytesIO(out))
    assert reopened.format == image_format and deepcolour.is_deep_colour(reopened)
    if image_format == "TIFF":
        assert reopened.info["icc_profile"] == SRGB
        assert reopened.info["dpi"] == pytest.approx((300, 300))


@pytest.mark.parametrize(("compression", "planar", "orientation"),
                         [(None, "contig", 1), ("lzw", "separate", 6)])
def test_an_rgbi_scan_keeps_its_infrared_sample_byte_for_byte(compression, planar, orientation):
    """Film scanners store infrared as a fourth 'unspecified' sample; Pillow drops it."""
    stored = np.dstack([rgb(), np.linspace(3, 250, 43 * 64).reshape(43, 64).astype(np.uint8)])
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, stored if planar == "contig" else np.moveaxis(stored, 2, 0),
                     photometric="rgb", planarconfig=planar, extrasamples=("unspecified",),
                     compression=compression, resolution=(4000, 4000), resolutionunit="INCH",
                     extratags=[(274, "H", 1, orientation, True)])
    photo, mask, out = restore(buffer.getvalue())
    assert photo.pixels.shape[2] == 3 and photo.orientation == orientation
    with tifffile.TiffFile(io.BytesIO(out)) as tiff:
        after, extra = tiff.pages[0].asarray(), tiff.pages[0].extrasamples
    assert after.shape == stored.shape and extra == (tifffile.EXTRASAMPLE.UNSPECIFIED,)
    assert (after[:, :, 3] == stored[:, :, 3]).all(), "the infrared sample changed"
    hole = imageio.orient(mask, orientation, inverse=True)
    assert (after[~hole] == stored[~hole]).all() and (after[hole] != stored[hole]).any()
    result = Image.open(io.BytesIO(out))
    assert result.info["dpi"] == pytest.approx((4000, 4000))
    assert result.getexif().get(imageio.ORIENTATION_TAG, 1) == orientation


def test_alpha_is_kept_as_it_was_even_inside_the_hole():
    source = np.dstack([rgb(), np.linspace(0, 255, 64, dtype=np.uint8)[None].repeat(43, 0)])
    _, mask, out = restore(encoded(source, "PNG"))
    assert (samples(out)[:, :, 3] == source[:, :, 3]).all()


def test_palette_keeps_its_palette_and_indices_outside_the_hole():
    source = Image.fromarray(rgb()).quantize(32, dither=Image.Dither.NONE)
    _, mask, out = restore(encoded(source, "PNG"))
    result = Image.open(io.BytesIO(out))
    assert result.mode == "P" and result.getpalette() == source.getpalette()


def test_transparent_palette_becomes_rgba_with_the_same_colours_outside_the_hole():
    source = Image.fromarray(rgb()).quantize(32, dither=Image.Dither.NONE)
    source.info["transparency"] = 0
    data = encoded(source, "PNG", transparency=0)
    _, mask, out = restore(data)
    before = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    after = samples(out)
    assert Image.open(io.BytesIO(out)).mode == "RGBA"
    assert (after[~mask] == before[~mask]).all()


def untouched_blocks(mask: np.ndarray, block: int = 16, reach: int = 2) -> np.ndarray:
    """Pixels outside every 16x16 JPEG block (MCU at 4:2:0) that holds a hole pixel, and
    more than `reach` px from one: the decoder's chroma upsampling looks that far."""
    height, width = mask.shape
    padded = np.zeros((-(-height // block) * block, -(-width // block) * block), bool)
    padded[:height, :width] = mask
    blocks = padded.reshape(padded.shape[0] // block, block, -1, block).any(axis=(1, 3))
    touched = np.kron(blocks, np.ones((block, block), np.uint8))[:height, :width]
    return cv2.dilate(touched, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)) == 0


def test_cmyk_jpeg_keeps_its_tables_and_is_re_encoded_with_them():
    """RGB and gray JPEGs are spliced (tests/test_jpegsplice.py); CMYK is re-encoded whole.
    Measured (160x106 chelsea, q83 4:2:0, strokes hole): outside the hole, mean |error| vs
    the input is 0.54 levels (same-settings re-encode of the input 0.49); all of the excess
    sits in the JPEG blocks the hole touches."""
    mode = "CMYK"
    source = Image.fromarray(small_photo("chelsea", 160)).convert(mode)
    data = encoded(source, "JPEG", quality=83, subsampling="4:2:0")
    photo, mask, out = restore(data, seed=3)
    original, result = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(out))
    assert (result.format, result.mode) == ("JPEG", mode)
    assert result.quantization == original.quantization
    reencode = encoded(original, "JPEG", quality="keep")
    assert abs(len(out) - len(reencode)) < 0.1 * len(reencode), "the archive must not balloon"
    decoded, ours, theirs = samples(data), samples(out), samples(reencode)
    clear = untouched_blocks(mask)
    assert clear.mean() > 0.4
    # Blocks the hole does not touch are coded exactly as a same-settings re-encode codes them.
    assert (ours[clear] == theirs[clear]).all()
    outside = ~mask
    ours_error = np.abs(ours[outside].astype(int) - decoded[outside]).mean()
    reencode_error = np.abs(theirs[outside].astype(int) - decoded[outside]).mean()
    assert ours_error < reencode_error + 0.25


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_masks_refer_to_the_displayed_photo_and_the_layout_is_kept(orientation, image_format):
    stored = rgb()
    exif = Image.Exif()
    exif[imageio.ORIENTATION_TAG] = orientation
    options = {"exif": exif.tobytes()} if image_format == "PNG" else {
        "tiffinfo": {imageio.ORIENTATION_TAG: orientation}}
    data = encoded(stored, image_format, **options)
    displayed = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    photo, mask, out = restore(data)
    assert (photo.pixels == displayed).all()
    result = Image.open(io.BytesIO(out))
    assert result.size == Image.open(io.BytesIO(data)).size
    assert result.getexif().get(imageio.ORIENTATION_TAG, 1) == orientation
    shown = np.asarray(ImageOps.exif_transpose(result))
    assert (shown[~mask] == displayed[~mask]).all() and (shown[mask] != displayed[mask]).any()


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "TIFF", "WEBP"])
def test_exif_icc_and_dpi_are_kept(image_format):
    exif = Image.Exif()
    exif[imageio.ORIENTATION_TAG] = 6
    exif[271] = "Hasselblad"
    options = {"exif": exif.tobytes(), "icc_profile": SRGB, "dpi": (600, 600)}
    if image_format == "TIFF":
        options = {"tiffinfo": {274: 6, 271: "Hasselblad"}, "icc_profile": SRGB,
                   "dpi": (600, 600)}
    if image_format == "WEBP":
        options.pop("dpi")  # WebP has no resolution field
    data = encoded(rgb(), image_format, **options)
    photo, mask, out = restore(data)
    assert photo.orientation == 6 and photo.pixels.shape[:2] == (64, 43)
    result = Image.open(io.BytesIO(out))
    assert result.info.get("icc_profile") == SRGB
    if "dpi" in options:  # PNG stores dots per metre: 600 dpi reads back as 599.9988
        assert result.info["dpi"] == pytest.approx((600, 600), abs=0.01)
    tags = result.getexif()
    assert tags[imageio.ORIENTATION_TAG] == 6 and tags[271] == "Hasselblad"
    shown = np.asarray(ImageOps.exif_transpose(result))
    assert shown.shape[:2] == (64, 43)
    if image_format in ("PNG", "TIFF"):
        assert (shown[~mask] == photo.pixels[~mask]).all()


@pytest.mark.parametrize(
    ("source_format", "flag", "expected_format", "expected_mode"),
    [("PNG", "jpeg", "JPEG", "RGB"), ("JPEG", "png", "PNG", "RGB"),
     ("TIFF", "webp", "WEBP", "RGB"), ("PNG", "tiff", "TIFF", "RGB")],
)
def test_format_override(source_format, flag, expected_format, expected_mode):
    data = encoded(rgb(), source_format)
    _, mask, out = restore(data, output_format=flag)
    result = Image.open(io.BytesIO(out))
    assert (result.format, result.mode) == (expected_format, expected_mode)


def test_16_bit_override_to_png_keeps_16_bits_and_to_jpeg_rounds_to_8():
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, deep(), photometric="rgb")
    _, _, png = restore(buffer.getvalue(), output_format="png")
    assert deepcolour.is_deep_colour(Image.open(io.BytesIO(png)))
    _, _, jpeg = restore(buffer.getvalue(), output_format="jpeg")
    assert Image.open(io.BytesIO(jpeg)).mode == "RGB"


def test_alpha_to_jpeg_is_refused_with_a_clear_message():
    with pytest.raises(imageio.ImageDecodeError, match="alpha"):
        restore(encoded(np.dstack([rgb(), rgb()[:, :, 0]]), "PNG"), output_format="jpeg")


def png_bomb(width: int, height: int) -> bytes:
    """A real 1-bit PNG of width x height zeros: tiny on disk, huge once decoded."""
    rows = zlib.compress((b"\x00" * (1 + -(-width // 8))) * height, 9)
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    chunk = deepcolour.png_chunk
    return deepcolour.PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(
        b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"this is not a photo, only words", "not a readable image"),
        (encoded(rgb(), "JPEG")[:-600], "cannot decode image data"),
        (encoded(rgb(), "PNG")[:-600], "cannot decode image data"),
        (png_bomb(20_000, 10_000), "refused: 20000x10000 = 200 MP is above the limit of 180 MP"),
    ],
    ids=["zero-bytes", "not-an-image", "truncated-jpeg", "truncated-png", "bomb"],
)
def test_hostile_files_are_refused_with_a_clear_message(data, message):
    with pytest.raises(imageio.ImageDecodeError, match=message):
        imageio.decode(data, max_pixels=180_000_000)


def test_hostile_files_in_an_archive_are_failed_rows_and_the_run_goes_on(archive):
    images, masks = archive["images"], archive["masks"]
    hostile = {
        "zero.png": b"",
        "words.jpg": b"this is not a photo, only words",
        "cut.jpg": encoded(rgb(), "JPEG")[:-600],
        "bomb.png": png_bomb(20_000, 10_000),
    }
    for name, data in hostile.items():
        (images / name).write_bytes(data)
        save_mask(hole_for((43, 64)), (masks / name).with_suffix(".png"))
    settings = RunSettings(images=str(images), masks=str(masks), out=str(archive["out"]),
                           method="ns")
    rows = {row["relative_path"]: row for row in restore_items(settings)}
    for name in hostile:
        assert (rows[name]["status"], rows[name]["error_kind"]) == ("failed", "decode"), name
        assert not (archive["out"] / name).exists()
    assert "empty file" in rows["zero.png"]["error"]
    assert "not a readable image" in rows["words.jpg"]["error"]
    assert "cannot decode image data" in rows["cut.jpg"]["error"]
    assert "above the limit of 180 MP" in rows["bomb.png"]["error"]
    assert {rows[name]["status"] for name in ("a/chelsea.jpg", "rocket.png")} == {"ok"}


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_16_bit_colour_keeps_orientation_icc_and_dpi(image_format):
    stored = deep()
    buffer = io.BytesIO()
    if image_format == "TIFF":
        tifffile.imwrite(buffer, stored, photometric="rgb", iccprofile=SRGB,
                         resolution=(600, 600), resolutionunit="INCH", software="ScanSoft 2",
                         extratags=[(274, "H", 1, 8, True), (271, "s", 0, "Epson", True)])
    else:
        exif = Image.Exif()
        exif[imageio.ORIENTATION_TAG] = 8
        png = cv2.imencode(".png", cv2.cvtColor(stored, cv2.COLOR_RGB2BGR))[1].tobytes()
        options = {"icc_profile": SRGB, "dpi": (600, 600), "exif": exif.tobytes()}
        buffer.write(deepcolour.add_png_chunks(png, options))
    photo, mask, out = restore(buffer.getvalue())
    assert photo.orientation == 8 and photo.pixels.shape[:2] == stored.shape[1::-1]
    result = Image.open(io.BytesIO(out))
    assert deepcolour.is_deep_colour(result)
    layout = tifffile.imread(io.BytesIO(out)) if image_format == "TIFF" else samples(out)
    assert layout.shape[:2] == stored.shape[:2], "the stored pixel layout must be kept"
    assert result.info["icc_profile"] == SRGB
    assert result.info["dpi"] == pytest.approx((600, 600), abs=0.01)
    assert result.getexif()[imageio.ORIENTATION_TAG] == 8
    if image_format == "TIFF":
        assert result.tag_v2[271] == "Epson" and result.tag_v2[305] == "ScanSoft 2"
    after = imageio.decode(out, 10_000_000).pixels
    assert (after[~mask] == photo.pixels[~mask]).all() and (after[mask] % 257 != 0).any()


@pytest.mark.parametrize("bits", [8, 16])
def test_a_tiffs_exif_and_gps_sub_ifds_are_kept(bits):
    """Camera settings and location live in sub-IFDs, which Pillow and tifffile drop."""
    camera = {33437: TiffImagePlugin.IFDRational(56, 10), 36867: "1961:07:04 10:00:00",
              37500: b"\x01\x02maker note"}
    place = {1: "N", 2: tuple(TiffImagePlugin.IFDRational(v, 1) for v in (48, 51, 0))}
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[271], tags[34665], tags[34853] = "Nikon", camera, place
    data = encoded(rgb(), "TIFF", tiffinfo=tags)  # libtiff (any compression) cannot write them
    if bits == 16:  # tifffile writes the pixels; tifftools adds the sub-IFDs Pillow wrote
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, deep(), photometric="rgb", compression="zlib")
        info = tifftools.read_tiff(io.BytesIO(buffer.getvalue()))
        original = tifftools.read_tiff(io.BytesIO(data))["ifds"][0]["tags"]
        info["ifds"][0]["tags"].update({tag: original[tag] for tag in (34665, 34853)})
        buffer = io.BytesIO()
        tifftools.write_tiff(info, buffer)
        data = buffer.getvalue()
    photo, mask, out = restore(data)
    assert photo.pixels.dtype == (np.uint16 if bits == 16 else np.uint8)
    before, after = Image.open(io.BytesIO(data)).getexif(), Image.open(io.BytesIO(out)).getexif()
    assert dict(after.get_ifd(0x8769)) == dict(before.get_ifd(0x8769)) != {}
    assert dict(after.get_ifd(0x8825)) == dict(before.get_ifd(0x8825)) != {}
    stored = tifffile.imread(io.BytesIO(out))
    assert stored.dtype == photo.pixels.dtype and (stored[~mask] == photo.pixels[~mask]).all()


def test_text_comments_and_xmp_are_kept():
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description about="scan 42"/></x:xmpmeta>'
    jpeg = encoded(rgb(), "JPEG", comment=b"box 7, shelf 3", xmp=xmp)
    out = Image.open(io.BytesIO(restore(jpeg)[2]))
    assert (out.info["comment"], out.info["xmp"]) == (b"box 7, shelf 3", xmp)
    text = PngImagePlugin.PngInfo()
    text.add_itxt("Title", "Grand-mère, 1951")
    for source in (Image.fromarray(rgb()), Image.fromarray(deep()[:, :, 0])):
        out = Image.open(io.BytesIO(restore(encoded(source, "PNG", pnginfo=text))[2]))
        assert out.text["Title"] == "Grand-mère, 1951"
    png = cv2.imencode(".png", deep())[1].tobytes()
    deep_png = deepcolour.add_png_chunks(png, {"text": {"Title": "Grand-mère, 1951"}})
    out = Image.open(io.BytesIO(restore(deep_png)[2]))
    assert deepcolour.is_deep_colour(out) and out.text["Title"] == "Grand-mère, 1951"


def test_a_cmyk_profile_is_not_attached_to_rgb_output():
    data = encoded(Image.fromarray(rgb()).convert("CMYK"), "JPEG", icc_profile=b"cmyk profile")
    assert Image.open(io.BytesIO(restore(data)[2])).info["icc_profile"] == b"cmyk profile"
    assert "icc_profile" not in Image.open(io.BytesIO(restore(data, "png")[2])).info


def test_formats_we_cannot_write_back_are_refused_unless_converted():
    gif = encoded(Image.fromarray(rgb()).quantize(64), "GIF")
    with pytest.raises(imageio.ImageDecodeError, match="pass --format png"):
        restore(gif)
    assert Image.open(io.BytesIO(restore(gif, "png")[2])).format == "PNG"
