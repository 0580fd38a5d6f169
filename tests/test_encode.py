"""File encodings (:mod:`xaicli.outputs.encode`): PNG overlays decode to exactly their pixels in any
reader, JPEG/WebP overlays (``output.overlay_format``) are valid and close, and the ``.npy`` bytes are
``np.save``'s."""

from __future__ import annotations

import io
import json
import typing

import numpy as np
import pytest
from PIL import Image

from xaicli.config import OVERLAY_FORMATS, OutputConfig
from xaicli.outputs.encode import OVERLAY_ENCODERS, encode_npy, encode_png


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img)


def overlay_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A heatmap blended over a noisy photo, as uint8 RGB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    heat = np.stack([np.sin(x / 19.0), np.cos(y / 17.0), np.sin((x + y) / 23.0)], -1) * 100 + 128
    photo = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 180 + 30 + rng.normal(0, 8, (h, w, 3))
    return np.clip(0.5 * heat + 0.5 * photo, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(224, 224, 3), (1, 1, 3), (7, 13, 3), (28, 28), (5, 9, 1), (300, 2, 3)])
def test_png_decodes_to_exactly_its_pixels(shape):
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(pixels)
    out = decoded(data)
    np.testing.assert_array_equal(out, pixels.reshape(out.shape))
    with Image.open(io.BytesIO(data)) as img:
        img.verify()  # chunk CRCs and structure
        assert img.format == "PNG" and img.mode == ("RGB" if shape[-1] == 3 and len(shape) == 3 else "L")


def test_png_of_an_overlay_is_smaller_than_raw_and_than_pillows_fast_level():
    pixels = overlay_like(224, 224)
    data = encode_png(pixels)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    assert len(data) < 0.8 * pixels.nbytes
    assert len(data) < len(buf.getvalue())  # smaller than Pillow's level 1
    np.testing.assert_array_equal(decoded(data), pixels)


def test_png_rejects_what_it_cannot_encode():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="got \\(2, 2, 4\\)"):
        encode_png(np.zeros((2, 2, 4), np.uint8))


def test_every_overlay_format_has_an_encoder():
    assert tuple(OVERLAY_ENCODERS) == OVERLAY_FORMATS == typing.get_args(
        typing.get_type_hints(OutputConfig)["overlay_format"])
    assert OutputConfig().overlay_format == "png"


@pytest.mark.parametrize("fmt, pil_format, max_error", [("jpg", "JPEG", 4.0), ("webp", "WEBP", 4.5)])
def test_lossy_overlays_are_valid_and_close(fmt, pil_format, max_error):
    pixels = overlay_like(64, 80)
    data = OVERLAY_ENCODERS[fmt](pixels)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == pil_format and img.size == (80, 64)
    out = decoded(data).astype(np.float64)
    assert np.abs(out - pixels).mean() < max_error
    assert len(data) < len(encode_png(pixels))


def test_npy_bytes_are_np_save():
    arr = np.random.default_rng(0).random((2, 5, 7), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    assert encode_npy(arr) == buf.getvalue()
    np.testing.assert_array_equal(np.load(io.BytesIO(encode_npy(arr))), arr)


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_explain_writes_overlays_in_the_chosen_format(cli, tmp_path, write_config, tiny_config, image_tree,
                                                      fmt):
    cfg = write_config(tmp_path, {**tiny_config, "output": {"overlay_format": fmt}})
    res = cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out", "--quiet")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert rows and all(r["overlay"].endswith(f".{fmt}") for r in rows)
    for r in rows:
        with Image.open(tmp_path / "out" / r["overlay"]) as img:
            assert img.size == (20, 16)
        assert np.load(tmp_path / "out" / r["map"]).shape == (16, 20)
    assert not [p for p in (tmp_path / "out").rglob("*.png") if p.is_file() and p.parent.name != "figures"]


def test_unknown_overlay_format_names_the_choices(cli, tmp_path, write_config, tiny_config, image_tree):
    cfg = write_config(tmp_path, {**tiny_config, "output": {"overlay_format": "gif"}})
    res = cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out")
    assert res.exit_code == 2
    assert "output.overlay_format" in res.output and "'png'" in res.output and "'webp'" in res.output
