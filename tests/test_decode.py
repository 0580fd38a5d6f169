"""Tests for xaicli.engine.decode: every unusual image is converted as documented, every bad file raises.

Every test runs twice: with Pillow only, and with the fast path for plain 8-bit JPEG/PNG files
(:mod:`xaicli.engine.fast_decode`, torchvision's codec ops) available - the guarantees hold on both."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from xaicli.engine import fast_decode
from xaicli.engine.decode import IMAGE_EXTENSIONS, load_image
from xaicli.errors import ImageDecodeError


@pytest.fixture(autouse=True, params=["pillow", "fast"])
def decoder(request, monkeypatch) -> str:
    """Run the test with Pillow only, then with the fast decoder available."""
    if request.param == "pillow":
        monkeypatch.setattr(fast_decode, "available", lambda load=False: False)
    elif not fast_decode.available(load=True):
        pytest.skip("torchvision has no image codec ops here")
    return request.param

RGBA_PIXEL = (200, 100, 50, 128)


def luma(r: int, g: int, b: int) -> int:
    """Pillow's ITU-R 601-2 luma, with its rounding."""
    return int(Image.new("RGB", (1, 1), (r, g, b)).convert("L").getpixel((0, 0)))


def save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def check_output(arr: np.ndarray, shape: tuple[int, ...]) -> None:
    assert arr.dtype == np.float32
    assert arr.shape == shape
    assert arr.flags.c_contiguous
    assert np.isfinite(arr).all()
    assert arr.min() >= 0.0 and arr.max() <= 1.0


def test_extensions():
    assert IMAGE_EXTENSIONS == frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"})


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3)])
def test_plain_rgb_png(tmp_path, mode, channels):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = save(Image.fromarray(data), tmp_path / "rgb.png")
    arr = load_image(path, mode)
    check_output(arr, (5, 7, channels))
    expected = np.asarray(Image.fromarray(data).convert(mode), dtype=np.float32) / 255
    np.testing.assert_allclose(arr.reshape(expected.shape), expected, atol=1e-7)


def test_str_path_accepted(tmp_path):
    path = save(Image.new("L", (2, 3), 51), tmp_path / "g.bmp")
    arr = load_image(str(path), "L")
    check_output(arr, (3, 2, 1))
    np.testing.assert_allclose(arr, 0.2, atol=1e-7)


# --- alpha ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("background, bg", [("black", 0.0), ("white", 1.0)])
def test_rgba_composited(tmp_path, background, bg):
    img = Image.new("RGBA", (3, 2), RGBA_PIXEL)
    img.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent red -> pure background
    img.putpixel((1, 0), (10, 20, 30, 255))  # opaque -> colour unchanged
    arr = load_image(save(img, tmp_path / "a.png"), "RGB", alpha_background=background)
    check_output(arr, (2, 3, 3))
    a = 128 / 255
    expected = [c / 255 * a + bg * (1 - a) for c in RGBA_PIXEL[:3]]
    np.testing.assert_allclose(arr[1, 2], expected, atol=1e-6)
    np.testing.assert_allclose(arr[0, 0], [bg, bg, bg], atol=1e-7)
    np.testing.assert_allclose(arr[0, 1], [10 / 255, 20 / 255, 30 / 255], atol=1e-7)
    # The composite of (200, 100, 50) at alpha 128, spelled out.
    if background == "black":
        np.testing.assert_allclose(arr[1, 2], [0.393695, 0.196847, 0.098424], atol=1e-6)
    else:
        np.testing.assert_allclose(arr[1, 2], [0.891734, 0.694887, 0.596463], atol=1e-6)


@pytest.mark.parametrize("background, bg", [("black", 0.0), ("white", 1.0)])
def test_rgba_to_gray_uses_luma_then_composites(tmp_path, background, bg):
    arr = load_image(save(Image.new("RGBA", (2, 2), RGBA_PIXEL), tmp_path / "a.png"), "L", background)
    check_output(arr, (2, 2, 1))
    a = 128 / 255
    np.testing.assert_allclose(arr, luma(*RGBA_PIXEL[:3]) / 255 * a + bg * (1 - a), atol=1e-6)


def test_opaque_rgba_matches_rgb(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((4, 5, 1), 255, np.uint8)], axis=2)
    p_rgb = save(Image.fromarray(rgb), tmp_path / "rgb.png")
    p_rgba = save(Image.fromarray(rgba), tmp_path / "rgba.png")
    for mode in ("L", "RGB"):
        np.testing.assert_array_equal(load_image(p_rgb, mode), load_image(p_rgba, mode))


@pytest.mark.parametrize("background, bg", [("black", 0.0), ("white", 1.0)])
@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3)])
def test_la_composited(tmp_path, background, bg, mode, channels):
    path = save(Image.new("LA", (3, 1), (100, 64)), tmp_path / "la.png")
    arr = load_image(path, mode, background)
    check_output(arr, (1, 3, channels))
    a = 64 / 255
    np.testing.assert_allclose(arr, 100 / 255 * a + bg * (1 - a), atol=1e-6)


def test_alpha_background_validated(tmp_path):
    path = save(Image.new("RGBA", (1, 1)), tmp_path / "a.png")
    with pytest.raises(ValueError, match="alpha_background"):
        load_image(path, "RGB", alpha_background="grey")


def test_mode_validated(tmp_path):
    path = save(Image.new("RGB", (1, 1)), tmp_path / "a.png")
    with pytest.raises(ValueError, match="mode"):
        load_image(path, "RGBA")


def test_rgb_png_with_trns_colour(tmp_path):
    img = Image.new("RGB", (2, 1), (40, 80, 120))
    img.putpixel((1, 0), (1, 2, 3))
    path = save(img, tmp_path / "t.png", transparency=(1, 2, 3))
    arr = load_image(path, "RGB", "white")
    np.testing.assert_allclose(arr[0, 0], [40 / 255, 80 / 255, 120 / 255], atol=1e-7)
    np.testing.assert_allclose(arr[0, 1], [1.0, 1.0, 1.0], atol=1e-7)


# --- palette, bi-level, colour spaces -------------------------------------------------------------------

PALETTE = [10, 20, 30, 200, 100, 50, 0, 255, 0]


def palette_image() -> Image.Image:
    img = Image.new("P", (3, 1), 0)
    img.putpalette(PALETTE)
    img.putpixel((1, 0), 1)
    img.putpixel((2, 0), 2)
    return img


@pytest.mark.parametrize("suffix", [".png", ".gif", ".bmp"])
def test_palette_without_transparency(tmp_path, suffix):
    arr = load_image(save(palette_image(), tmp_path / f"p{suffix}"), "RGB")
    check_output(arr, (1, 3, 3))
    np.testing.assert_allclose(arr[0] * 255, np.reshape(PALETTE, (3, 3)), atol=1e-4)
    gray = load_image(tmp_path / f"p{suffix}", "L")
    np.testing.assert_allclose(
        gray[0, :, 0] * 255, [luma(10, 20, 30), luma(200, 100, 50), luma(0, 255, 0)], atol=1e-4
    )


@pytest.mark.parametrize("suffix", [".png", ".gif"])
@pytest.mark.parametrize("background, bg", [("black", 0.0), ("white", 1.0)])
def test_palette_transparent_index(tmp_path, suffix, background, bg):
    path = save(palette_image(), tmp_path / f"p{suffix}", transparency=0)
    arr = load_image(path, "RGB", background)
    np.testing.assert_allclose(arr[0, 0], [bg, bg, bg], atol=1e-7)  # index 0 is transparent
    np.testing.assert_allclose(arr[0, 1] * 255, [200, 100, 50], atol=1e-4)


@pytest.mark.parametrize("background, bg", [("black", 0.0), ("white", 1.0)])
def test_palette_alpha_table(tmp_path, background, bg):
    path = save(palette_image(), tmp_path / "p.png", transparency=bytes([255, 128, 0]))
    arr = load_image(path, "RGB", background)
    a = 128 / 255
    np.testing.assert_allclose(arr[0, 0] * 255, [10, 20, 30], atol=1e-4)
    np.testing.assert_allclose(arr[0, 1], [c / 255 * a + bg * (1 - a) for c in (200, 100, 50)], atol=1e-6)
    np.testing.assert_allclose(arr[0, 2], [bg, bg, bg], atol=1e-7)


def test_bilevel(tmp_path):
    img = Image.new("1", (2, 1), 0)
    img.putpixel((1, 0), 1)
    arr = load_image(save(img, tmp_path / "b.png"), "RGB")
    np.testing.assert_array_equal(arr[0], [[0, 0, 0], [1, 1, 1]])


@pytest.mark.parametrize(("pil_mode", "colour", "suffix"), [
    ("CMYK", (10, 20, 30, 40), ".jpg"), ("CMYK", (10, 20, 30, 40), ".tif"),
    ("LAB", (120, 140, 90), ".tif"), ("YCbCr", (120, 140, 90), ".tif"),
])
def test_other_colour_spaces(tmp_path, pil_mode, colour, suffix):
    """CMYK, LAB and YCbCr files decode to what Pillow's own RGB conversion gives (and its luma for L)."""
    path = save(Image.new(pil_mode, (3, 2), colour), tmp_path / f"x{suffix}")
    with Image.open(path) as ref:
        assert ref.mode == pil_mode
        rgb = ref.convert("RGB").getpixel((0, 0))
    arr = load_image(path, "RGB")
    check_output(arr, (2, 3, 3))
    np.testing.assert_allclose(arr[1, 1] * 255, rgb, atol=1e-4)
    np.testing.assert_allclose(load_image(path, "L")[1, 1, 0] * 255, luma(*rgb), atol=1e-4)


# --- high bit depth --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_gray(tmp_path, suffix):
    data = np.array([[0, 32768, 65535, 257]], dtype=np.uint16)
    path = save(Image.fromarray(data), tmp_path / f"g16{suffix}")
    with Image.open(path) as ref:
        assert ref.mode.startswith("I;16")
    arr = load_image(path, "L")
    check_output(arr, (1, 4, 1))
    np.testing.assert_allclose(arr[0, :, 0], [0.0, 32768 / 65535, 1.0, 257 / 65535], atol=1e-7)
    assert arr[0, 2, 0] == 1.0
    rgb = load_image(path, "RGB")
    check_output(rgb, (1, 4, 3))
    np.testing.assert_array_equal(rgb, np.repeat(arr, 3, axis=2))


def test_16bit_big_endian_tiff(tmp_path):
    img = Image.new("I;16B", (2, 1), 1000)
    path = save(img, tmp_path / "be.tif")
    with Image.open(path) as ref:
        assert ref.mode == "I;16B"
    np.testing.assert_allclose(load_image(path, "L"), 1000 / 65535, atol=1e-7)


def test_16bit_png_with_trns(tmp_path):
    data = np.array([[5000, 1000]], dtype=np.uint16)
    path = save(Image.fromarray(data), tmp_path / "t.png", transparency=1000)
    arr = load_image(path, "L", "white")
    np.testing.assert_allclose(arr[0, :, 0], [5000 / 65535, 1.0], atol=1e-7)


def test_int32_tiff_small_values_are_16bit(tmp_path):
    data = np.array([[0, 32768, 65535, -7]], dtype=np.int32)
    path = save(Image.fromarray(data), tmp_path / "i.tif")
    with Image.open(path) as ref:
        assert ref.mode == "I"
    arr = load_image(path, "L")
    check_output(arr, (1, 4, 1))
    np.testing.assert_allclose(arr[0, :, 0], [0.0, 32768 / 65535, 1.0, 0.0], atol=1e-7)


def test_int32_tiff_large_values(tmp_path):
    data = np.array([[0, 70000, 2**31 - 1]], dtype=np.int32)
    arr = load_image(save(Image.fromarray(data), tmp_path / "i.tif"), "RGB")
    check_output(arr, (1, 3, 3))
    np.testing.assert_allclose(arr[0, :, 0], [0.0, 70000 / (2**32 - 1), (2**31 - 1) / (2**32 - 1)], rtol=1e-6)
    assert (arr[..., 0] == arr[..., 2]).all()


def test_uint32_tiff_read_as_unsigned(tmp_path):
    # Pillow always writes mode 'I' as signed (SampleFormat 2); patch the tag to 1 (unsigned) so the file
    # is what e.g. tifffile writes for uint32 data. Pillow reads it into signed 'I' (4294967291 -> -5).
    path = save(Image.fromarray(np.array([[0, 70000, -5]], dtype=np.int32)), tmp_path / "u.tif")
    entry = b"\x53\x01\x03\x00\x01\x00\x00\x00"  # tag 339, SHORT, count 1
    raw = path.read_bytes()
    assert raw.count(entry + b"\x02\x00") == 1
    path.write_bytes(raw.replace(entry + b"\x02\x00", entry + b"\x01\x00"))
    with Image.open(path) as ref:
        assert ref.mode == "I" and np.asarray(ref)[0, 2] == -5
    arr = load_image(path, "L")
    np.testing.assert_allclose(arr[0, :, 0], [0.0, 70000 / (2**32 - 1), (2**32 - 5) / (2**32 - 1)], rtol=1e-6)


def test_float_tiff_in_unit_range_kept(tmp_path):
    data = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    path = save(Image.fromarray(data), tmp_path / "f.tif")
    with Image.open(path) as ref:
        assert ref.mode == "F"
    arr = load_image(path, "L")
    check_output(arr, (1, 4, 1))
    np.testing.assert_array_equal(arr[0, :, 0], data[0])


def test_float_tiff_out_of_range_min_max(tmp_path):
    data = np.array([[-2.0, 0.0, 2.0, 6.0]], dtype=np.float32)
    arr = load_image(save(Image.fromarray(data), tmp_path / "f.tif"), "RGB")
    check_output(arr, (1, 4, 3))
    np.testing.assert_allclose(arr[0, :, 1], [0.0, 0.25, 0.5, 1.0], atol=1e-7)


def test_float_tiff_non_finite(tmp_path):
    data = np.array([[np.nan, np.inf, -np.inf, 0.5, 0.75]], dtype=np.float32)
    arr = load_image(save(Image.fromarray(data), tmp_path / "f.tif"), "L")
    check_output(arr, (1, 5, 1))
    np.testing.assert_allclose(arr[0, :, 0], [0.0, 1.0, 0.0, 0.5, 0.75], atol=1e-7)


def test_float_tiff_constant_out_of_range(tmp_path):
    arr = load_image(save(Image.fromarray(np.full((2, 2), 5.0, np.float32)), tmp_path / "f.tif"), "L")
    check_output(arr, (2, 2, 1))
    assert (arr == 0).all()


# --- geometry, frames ------------------------------------------------------------------------------------


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # white left half, black right half
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = save(img, tmp_path / "rot.jpg", exif=exif, quality=95)
    with Image.open(path) as ref:
        assert ref.size == (40, 20) and ref.getexif()[0x0112] == 6
    arr = load_image(path, "RGB")
    check_output(arr, (40, 20, 3))  # stored 20 rows x 40 columns, displayed 40 rows x 20 columns
    assert arr[:15].mean() > 0.9 and arr[25:].mean() < 0.1  # the white left half is now the top half


def test_unreadable_exif_warns_and_keeps_pixels(tmp_path, monkeypatch, decoder):
    if decoder == "fast":
        pytest.skip("simulated on the Pillow path; a real unreadable EXIF block: test_fast_decode.py")
    path = save(Image.new("L", (4, 2), 255), tmp_path / "e.png")

    def broken(image, *, in_place=False):
        raise SyntaxError("bad EXIF")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    with pytest.warns(UserWarning, match="EXIF"):
        arr = load_image(path, "L")
    check_output(arr, (2, 4, 1))
    assert (arr == 1).all()


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp", ".tif"])
@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3)])
def test_one_pixel(tmp_path, suffix, mode, channels):
    arr = load_image(save(Image.new("RGB", (1, 1), (255, 255, 255)), tmp_path / f"one{suffix}"), mode)
    check_output(arr, (1, 1, channels))
    np.testing.assert_allclose(arr, 1.0, atol=1e-6)


@pytest.mark.parametrize("size", [(5000, 1), (1, 5000)])
def test_extreme_aspect_ratio(tmp_path, size):
    img = Image.new("L", size, 0)
    img.putpixel((size[0] - 1, size[1] - 1), 255)
    arr = load_image(save(img, tmp_path / "thin.png"), "RGB")
    check_output(arr, (size[1], size[0], 3))
    assert arr[-1, -1].tolist() == [1.0, 1.0, 1.0] and arr.sum() == 3.0


def test_gray_replicated_to_rgb(tmp_path):
    data = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = save(Image.fromarray(data), tmp_path / "g.png")
    arr = load_image(path, "RGB")
    check_output(arr, (3, 4, 3))
    for c in range(3):
        np.testing.assert_allclose(arr[:, :, c], data / 255, atol=1e-7)


def test_multiframe_gif_first_frame(tmp_path):
    frames = []
    for index in (1, 2, 0):
        frame = Image.new("P", (4, 3), index)
        frame.putpalette(PALETTE)
        frames.append(frame)
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as ref:
        assert ref.n_frames == 3
    arr = load_image(path, "RGB")
    check_output(arr, (3, 4, 3))
    np.testing.assert_allclose(arr * 255, np.broadcast_to([200, 100, 50], (3, 4, 3)), atol=1e-4)


def test_multipage_tiff_first_page(tmp_path):
    pages = [Image.new("L", (3, 3), v) for v in (51, 102)]
    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    arr = load_image(path, "L")
    np.testing.assert_allclose(arr, 0.2, atol=1e-7)


def test_extension_does_not_matter(tmp_path):
    path = save(Image.new("RGB", (2, 2), (255, 0, 0)), tmp_path / "really_a_png.jpg", format="PNG")
    np.testing.assert_allclose(load_image(path, "RGB")[0, 0], [1, 0, 0])


# --- failures --------------------------------------------------------------------------------------------


def real_image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def bad_zero_byte(tmp_path: Path) -> Path:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    return path


def bad_garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.png"
    path.write_bytes(np.random.default_rng(4).integers(0, 256, 500, dtype=np.uint8).tobytes())
    return path


def bad_truncated_png(tmp_path: Path) -> Path:
    data = real_image_bytes("PNG")
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def bad_truncated_jpeg(tmp_path: Path) -> Path:
    data = real_image_bytes("JPEG")
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def bad_text_as_jpg(tmp_path: Path) -> Path:
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n")
    return path


def bad_eps_as_png(tmp_path: Path) -> Path:
    # Pillow identifies EPS (and would run Ghostscript to decode it); load_image does not try that decoder.
    path = tmp_path / "drawing.png"
    Image.new("RGB", (4, 4)).save(path, format="EPS")
    with Image.open(path) as ref:
        assert ref.format == "EPS"
    return path


def bad_directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder.png"
    path.mkdir()
    return path


def bad_missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.png"


def bad_fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (bad_zero_byte, r"empty file \(0 bytes\)"),
        (bad_garbage, r"not an image \(cannot identify image file\)"),
        (bad_truncated_png, r"truncated or corrupt image data: .*truncated"),
        (bad_truncated_jpeg, r"truncated or corrupt image data: .*truncated"),
        (bad_text_as_jpg, r"not an image"),
        (bad_eps_as_png, r"not an image"),
        (bad_directory, r"cannot open: is a directory"),
        (bad_missing, r"cannot open: No such file or directory"),
        pytest.param(
            bad_fifo,
            r"cannot open: not a regular file",
            marks=pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs"),
        ),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_bad_file_raises(tmp_path, make, message, mode):
    path = make(tmp_path)
    with pytest.raises(ImageDecodeError, match=message) as info:
        load_image(path, mode)
    assert len(str(info.value)) < 200
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_unreadable_file(tmp_path):
    path = save(Image.new("RGB", (2, 2)), tmp_path / "secret.png")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod 000 does not stop reading")
        with pytest.raises(ImageDecodeError, match="cannot open: Permission denied"):
            load_image(path, "RGB")
    finally:
        path.chmod(0o644)


def test_decompression_bomb(tmp_path, monkeypatch):
    path = save(Image.new("L", (20, 20)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # error above 2 x 100 pixels
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(path, "L")


def test_truncated_images_flag_untouched():
    import xaicli.engine.decode  # noqa: F401

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_permission_denied_message(tmp_path, monkeypatch):
    """The chmod 000 case, simulated so that it also runs as root."""
    import xaicli.engine.decode as decode

    path = save(Image.new("RGB", (2, 2)), tmp_path / "secret.png")

    def denied(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", os.fspath(file))

    monkeypatch.setattr(decode, "open", denied, raising=False)
    with pytest.raises(ImageDecodeError, match=r"^cannot open: Permission denied$"):
        load_image(path, "RGB")
