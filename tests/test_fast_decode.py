"""The fast decode path (:mod:`xaicli.engine.fast_decode`): plain 8-bit JPEG/PNG files decoded by
torchvision's codec ops give exactly Pillow's pixels, everything unusual goes to Pillow, and a broken file
gets Pillow's error."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xaicli.engine.decode as decode
from xaicli.engine import fast_decode
from xaicli.engine.decode import decode_pixels, load_image, unit_float
from xaicli.engine.preprocess import Preprocess
from xaicli.errors import ImageDecodeError

pytestmark = pytest.mark.skipif(not fast_decode.available(load=True), reason="no torchvision image ops")


def photo(w: int, h: int, gray: bool = False, seed: int = 0) -> Image.Image:
    """Smooth colour gradients with noise: compresses like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / max(w, 1), y / max(h, 1), (x + y) / max(w + h, 1)], -1) * 200 + 20
    arr = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr[:, :, 0] if gray else arr)


PLAIN = {  # name -> (image, save options); all taken by the fast path
    "baseline_420.jpg": (photo(64, 48), {"quality": 90}),
    "baseline_444.jpg": (photo(64, 48, seed=1), {"quality": 95, "subsampling": 0}),
    "baseline_422.jpg": (photo(64, 48, seed=2), {"quality": 85, "subsampling": 1}),
    "progressive.jpg": (photo(50, 37, seed=3), {"quality": 80, "progressive": True}),
    "optimised.jpg": (photo(33, 45, seed=4), {"quality": 75, "optimize": True}),
    "restart_markers.jpg": (photo(64, 48, seed=5), {"quality": 90, "restart_marker_blocks": 2}),
    "gray.jpg": (photo(30, 20, gray=True, seed=6), {"quality": 90}),
    "odd_size.jpg": (photo(17, 23, seed=7), {"quality": 90}),
    "one_pixel.jpg": (photo(1, 1, seed=8), {"quality": 90}),
    "rgb.png": (photo(30, 20, seed=9), {}),
    "gray.png": (photo(28, 28, gray=True, seed=10), {}),
    "with_text.png": (photo(9, 7, seed=11), {"pnginfo": None}),
}


def write(tmp_path: Path, name: str, image: Image.Image, **options) -> Path:
    path = tmp_path / name
    if options.get("pnginfo", 0) is None:
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("Software", "a camera")
        options["pnginfo"] = info
    image.save(path, **options)
    return path


def pillow_not_called(monkeypatch) -> None:
    def refuse(*_args, **_kwargs):
        raise AssertionError("Pillow was used for a file the fast path should decode")

    monkeypatch.setattr(decode.Image, "open", refuse)


@pytest.mark.parametrize("name", sorted(PLAIN))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_plain_files_decode_to_pillows_pixels_without_pillow(tmp_path, monkeypatch, name, mode):
    image, options = PLAIN[name]
    path = write(tmp_path, name, image, **options)
    if mode == "L" and image.mode != "L":
        pytest.skip("colour -> luma is Pillow's conversion: not a fast-path case (see test below)")
    reference = decode_pixels(path, mode, fast=False)
    assert reference.dtype == np.uint8  # an opaque 8-bit image comes back as its pixels
    pillow_not_called(monkeypatch)
    fast = decode_pixels(path, mode, fast=True)
    assert fast.dtype == np.uint8 and fast.shape == reference.shape
    np.testing.assert_array_equal(fast, reference)
    np.testing.assert_array_equal(load_image(path, mode, fast=True), unit_float(reference))


UNUSUAL = {  # name -> function writing a file the fast path must leave to Pillow
    "cmyk.jpg": lambda p: photo(20, 10).convert("CMYK").save(p, quality=90),
    "exif_rotated.jpg": lambda p: _exif_jpeg(p, 6),
    "exif_unreadable.jpg": lambda p: _exif_jpeg(p, None, broken=True),
    "palette.png": lambda p: photo(20, 10).convert("P").save(p),
    "transparent_colour.png": lambda p: photo(20, 10).save(p, transparency=(10, 20, 30)),
    "rgba.png": lambda p: photo(20, 10).convert("RGBA").save(p),
    "sixteen_bit.png": lambda p: Image.fromarray(np.full((4, 5), 40000, np.uint16)).save(p),
    "with_exif.png": lambda p: _exif_png(p),
    "animated.png": lambda p: photo(8, 6).save(p, save_all=True, append_images=[photo(8, 6, seed=1)]),
    "bad_ancillary_crc.png": lambda p: _corrupt_text_crc(p),
    "no_end_marker.jpg": lambda p: p.write_bytes(_jpeg_bytes(photo(20, 10))[:-2]),
    "big.jpg": lambda p: photo(1000, 900).save(p, quality=80),  # Pillow decodes it reduced (draft)
    "big.png": lambda p: photo(1000, 900).save(p),  # Pillow's path reduces it (box filter)
}


def _jpeg_bytes(image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **options)
    return buf.getvalue()


def _exif_jpeg(path: Path, orientation: int | None, broken: bool = False) -> None:
    image = photo(20, 10)
    exif = image.getexif()
    if orientation is not None:
        exif[0x0112] = orientation
    data = exif.tobytes() if not broken else b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xff"
    image.save(path, quality=90, exif=data)


def _exif_png(path: Path) -> None:
    image = photo(20, 10)
    exif = image.getexif()
    exif[0x0112] = 3
    image.save(path, exif=exif)


def _corrupt_text_crc(path: Path) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "hello")
    buf = io.BytesIO()
    photo(8, 6).save(buf, format="PNG", pnginfo=info)
    data = bytearray(buf.getvalue())
    at = data.index(b"tEXt") + 4 + len(b"Comment\x00hello")  # the chunk's CRC
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", sorted(UNUSUAL))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_unusual_files_go_to_pillow(tmp_path, monkeypatch, name, mode):
    path = tmp_path / name
    UNUSUAL[name](path)
    used = []
    monkeypatch.setattr(fast_decode, "decode_plain", lambda *a: used.append(a) or None)
    reduce_to = (224, 224) if name.startswith("big") else None
    try:
        expected = load_image(path, mode, reduce_to=reduce_to, fast=False)
    except ImageDecodeError as err:
        with pytest.raises(ImageDecodeError, match=str(err)[:30].replace("(", r"\(")):
            load_image(path, mode, reduce_to=reduce_to, fast=True)
    else:
        np.testing.assert_array_equal(load_image(path, mode, reduce_to=reduce_to, fast=True), expected)
    assert used == []  # never handed to the fast decoder


def test_colour_file_in_gray_mode_goes_to_pillow(tmp_path, monkeypatch):
    path = write(tmp_path, "rgb.jpg", photo(20, 10), quality=90)
    called = []
    monkeypatch.setattr(fast_decode, "decode_plain", lambda *a: called.append(a) or None)
    np.testing.assert_array_equal(load_image(path, "L", fast=True), load_image(path, "L", fast=False))
    assert called == []


def test_unreadable_exif_in_a_jpeg_warns_on_both_paths(tmp_path):
    path = tmp_path / "bad_exif.jpg"
    _exif_jpeg(path, None, broken=True)
    for fast in (False, True):
        with pytest.warns(UserWarning, match="EXIF"):
            load_image(path, "RGB", fast=fast)


def _fuzzed(data: bytes, seed: int) -> list[bytes]:
    """Truncations and byte flips of ``data``."""
    rng = np.random.default_rng(seed)
    out = [data[:n] for n in (len(data) // 3, len(data) // 2, len(data) - 1, len(data) - 2)]
    out.append(data[: len(data) // 2] + b"\xff\xd9")  # cut, then an end marker
    for _ in range(12):
        flipped = bytearray(data)
        at = int(rng.integers(2, len(data)))
        flipped[at] ^= int(rng.integers(1, 256))
        out.append(bytes(flipped))
    return out


@pytest.mark.parametrize("kind", ["jpeg", "png", "gray_jpeg", "progressive_jpeg"])
def test_broken_files_get_the_same_result_on_both_paths(tmp_path, kind):
    """Whatever is wrong with a file, the fast path gives what Pillow's path gives: the same pixels
    (a corrupt JPEG libjpeg can still decode) or the same error."""
    image = photo(40, 30, gray=kind == "gray_jpeg", seed=3)
    buf = io.BytesIO()
    image.save(buf, format="PNG" if kind == "png" else "JPEG", quality=85,
               progressive=kind == "progressive_jpeg")
    for i, data in enumerate(_fuzzed(buf.getvalue(), seed=len(kind))):
        path = tmp_path / f"{kind}_{i}.{'png' if kind == 'png' else 'jpg'}"
        path.write_bytes(data)
        outcomes = []
        for fast in (False, True):
            try:
                outcomes.append(load_image(path, "RGB", fast=fast))
            except ImageDecodeError as err:
                outcomes.append(str(err))
        pillow, fast = outcomes
        if isinstance(pillow, str):
            assert fast == pillow, f"case {i}"
        else:
            assert isinstance(fast, np.ndarray), f"case {i}: {fast}"
            np.testing.assert_array_equal(fast, pillow, err_msg=f"case {i}")


@pytest.mark.parametrize("resize", ["exact", "shorter"])
@pytest.mark.parametrize("size", [(224, 224), (28, 28), (40, 64)])
def test_model_inputs_are_identical_on_both_paths(tmp_path, resize, size):
    """What the model sees (decode, float conversion, antialiased resize) is bit-identical, whichever
    decoder ran and whatever memory layout its pixels came in."""
    pre = Preprocess(size, "RGB", (0.5,), (0.5,), resize)
    for name in ("baseline_420.jpg", "progressive.jpg", "gray.jpg", "rgb.png", "gray.png"):
        image, options = PLAIN[name]
        path = write(tmp_path, name, image, **options)
        assert torch.equal(pre.load(str(path), fast=True), pre.load(str(path), fast=False)), name


def test_unit_float_is_division_by_255_for_every_value():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    out = unit_float(values)
    assert out.dtype == np.float32 and out[-1, -1, 0] == 1.0 and out[0, 0, 0] == 0.0
    np.testing.assert_array_equal(out, values.astype(np.float32) / np.float32(255))
    chw = np.ascontiguousarray(np.repeat(values, 3, axis=2).transpose(2, 0, 1)).transpose(1, 2, 0)
    assert unit_float(chw).strides[2] > unit_float(chw).strides[0]  # the layout is kept (no copy pass)
    floats = np.full((2, 2, 1), 0.25, np.float32)
    assert unit_float(floats) is floats


def _tiff(order: str, entries: list[tuple[int, int, int]]) -> bytes:
    """A minimal EXIF (TIFF) block: header and IFD0 with (tag, type, value) entries."""
    o = "<" if order == "II" else ">"
    ifd = struct.pack(o + "H", len(entries)) + b"".join(
        struct.pack(o + "HHI", tag, kind, 1) + struct.pack(o + "HH", value, 0)
        for tag, kind, value in entries)
    return order.encode() + struct.pack(o + "HI", 42, 8) + ifd + b"\x00\x00\x00\x00"


@pytest.mark.parametrize("order", ["II", "MM"])
def test_exif_orientation_parser(order):
    assert fast_decode.exif_orientation(_tiff(order, [(0x010F, 3, 7), (0x0112, 3, 6)])) == 6
    assert fast_decode.exif_orientation(_tiff(order, [(0x010F, 3, 7)])) is None
    assert fast_decode.exif_orientation(_tiff(order, [(0x0112, 4, 1)])) == -1  # not a SHORT: unreadable
    assert fast_decode.exif_orientation(b"XX" + b"\x00" * 10) == -1
    assert fast_decode.exif_orientation(_tiff(order, [(0x0112, 3, 1)])[:12]) == -1  # cut short


def test_png_sniffer_checks_every_crc_and_needs_the_end(tmp_path):
    buf = io.BytesIO()
    photo(5, 4).save(buf, format="PNG")
    data = buf.getvalue()
    assert fast_decode.png_size(data, "RGB") == (5, 4)
    assert fast_decode.png_size(data, "L") is None  # colour PNG, gray wanted: Pillow converts
    assert fast_decode.png_size(data[:-12], "RGB") is None  # no IEND
    idat = data.index(b"IDAT")
    broken = bytearray(data)
    broken[idat + 6] ^= 1  # a byte of the compressed data: the CRC no longer matches
    assert fast_decode.png_size(bytes(broken), "RGB") is None
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    body = data[idat + 4 : idat + 4 + length]
    assert zlib.crc32(b"IDAT" + body) == struct.unpack(">I", data[idat + 4 + length : idat + 8 + length])[0]


def test_jpeg_sniffer_reads_the_frame_header():
    data = _jpeg_bytes(photo(33, 21))
    assert fast_decode.jpeg_size(data, "RGB") == (33, 21)
    assert fast_decode.jpeg_size(data, "L") is None  # colour JPEG, gray wanted
    assert fast_decode.jpeg_size(_jpeg_bytes(photo(33, 21, gray=True)), "L") == (33, 21)
    assert fast_decode.jpeg_size(data[:20], "RGB") is None  # the frame header is not in the head
    assert fast_decode.jpeg_size(b"\x89PNG" + data, "RGB") is None


def test_without_torchvision_loaded_the_default_uses_pillow(monkeypatch):
    monkeypatch.setattr(fast_decode, "_ops", False)  # not resolved yet
    monkeypatch.delitem(__import__("sys").modules, "torchvision")
    assert not fast_decode.available()  # nothing imported for it
    assert "torchvision" not in __import__("sys").modules
