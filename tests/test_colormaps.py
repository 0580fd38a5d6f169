"""Colormaps: the stored tables are matplotlib's and OpenCV's exactly, and there is one colour path (a
value gets the same colour in an overlay file, a figure cell and a colorbar)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from xaicli.render.colormap_tables import TABLES
from xaicli.render.colormaps import COLORMAPS, DIVERGING, apply_colormap, colour_index, lut, resolve
from xaicli.render.figures import FigureStyle, GridCell, GridRow, colourise, render_grid
from xaicli.render.overlay import NEUTRAL, blend, overlay, to_rgb

MATPLOTLIB = [n for n in COLORMAPS if n != "jet"]

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_names_accepted_by_the_config_are_unchanged() -> None:
    assert COLORMAPS == ("jet", "viridis", "inferno", "magma", "gray", "hot", "coolwarm", "bwr")
    assert set(TABLES) == set(COLORMAPS) and DIVERGING <= set(COLORMAPS)


@pytest.mark.parametrize("name", COLORMAPS)
def test_every_table_has_256_rgb_entries_in_0_1(name: str) -> None:
    t = lut(name)
    assert t.shape == (256, 3) and t.dtype == torch.float32
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_unknown_colormap_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown colormap"):
        lut("rainbow")


@pytest.mark.parametrize("name", MATPLOTLIB)
def test_tables_equal_matplotlibs(name: str) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    want = matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3]
    assert np.abs(lut(name).numpy() - want).max() <= 0.5 / 255
    # matplotlib puts 0.5 on entry 128, as colour_index does
    assert np.allclose(matplotlib.colormaps[name](0.5)[:3], want[128])


def test_jet_is_opencvs_colormap_jet() -> None:
    cv2 = pytest.importorskip("cv2")
    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0]
    ours = (lut("jet").numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(ours, bgr[:, ::-1])


def test_neither_matplotlib_nor_opencv_is_imported_at_run_time() -> None:
    code = ("import sys, torch\n"
            "from xaicli.render.colormaps import COLORMAPS, lut\n"
            "from xaicli.render import figures, overlay\n"
            "for n in COLORMAPS: lut(n)\n"
            "overlay.overlay(torch.rand(1, 3, 4, 4), torch.rand(1, 1, 4, 4))\n"
            "print(sorted({'matplotlib', 'cv2'} & set(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("name", COLORMAPS)
def test_signed_zero_is_the_middle_entry(name: str) -> None:
    used = resolve(name, signed=True)
    assert used in DIVERGING and (used == name) == (name in DIVERGING)
    assert int(colour_index(torch.zeros(1), signed=True)) == 128 == 256 // 2
    colours = apply_colormap(torch.tensor([[-1.0, 0.0, 1.0]]), name, signed=True)[0]
    table = lut(used)
    assert torch.equal(colours[1], table[128])
    assert torch.equal(colours[0], table[0]) and torch.equal(colours[2], table[255])


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("name", COLORMAPS)
def test_figure_cells_colorbars_and_overlays_share_one_colour_path(name: str, signed: bool) -> None:
    """The same image and map give the same pixels in an overlay file and in a figure cell."""
    rng = np.random.default_rng(COLORMAPS.index(name))
    h = w = 24
    image = rng.integers(0, 256, (3, h, w), dtype=np.uint8)  # exact in uint8: figures round-trip it
    values = rng.random((h, w), dtype=np.float32)
    if signed:
        values = values * 2 - 1
        values[0, 0], values[0, 1] = -1.0, 1.0  # largest magnitude 1: the figure's scaling is a no-op
    else:
        values[0, 0], values[0, 1] = 0.0, 1.0  # min 0, max 1: per-map normalisation is a no-op
    values[1, :4] = [0.0, 0.5, 127.5 / 255, 0.5 / 255]  # rounding ties

    style = FigureStyle(cell_size=w, colormap=name, alpha=0.4)
    fig = render_grid([GridRow("r", [GridCell(image, values, signed=signed)])], title="t", style=style)
    cell = np.asarray(fig.image.crop(fig.boxes[(0, 0)]))

    over = overlay(torch.from_numpy(image)[None].float() / 255, torch.from_numpy(values)[None, None], name,
                   0.4, signed)[0, 0].numpy()
    np.testing.assert_array_equal(cell, over)

    # the colorbar colours (colourise) are the overlay at alpha 1
    pure = overlay(torch.zeros(1, 1, h, w), torch.from_numpy(values)[None, None], name, 1.0, signed)[0, 0]
    np.testing.assert_array_equal(colourise(values, name, signed), pure.numpy())


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("scale", [1, 3])
def test_overlay_equals_the_unfused_blend_bit_for_bit(alpha: float, signed: bool, scale: int) -> None:
    """The per-image overlays (pre-multiplied table, in-place sum and rounding) give exactly
    ``blend(image, apply_colormap(map), alpha)``, on float images the model saw (not only uint8 ones)."""
    gen = torch.Generator().manual_seed(int(alpha * 100) + 7 * signed + scale)
    images = torch.rand(3, 3, 10, 12, generator=gen)
    maps = torch.rand(3, 2, 10, 12, generator=gen) * 1.2 - 0.1  # some values outside the range: clipped
    if signed:
        maps = maps * 2 - 1
    maps[0, 0, 0, :4] = torch.tensor([0.0, 0.5, 127.5 / 255, 0.5 / 255])  # rounding ties
    for name in ("jet", "viridis", "coolwarm"):
        got = overlay(images, maps, name, alpha, signed, scale)
        big_images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
        big_maps = torch.nn.functional.interpolate(maps, scale_factor=scale, mode="nearest")
        expected = blend(to_rgb(big_images)[:, None], apply_colormap(big_maps, name, signed), alpha)
        assert got.dtype == torch.uint8 and got.shape == (3, 2, 10 * scale, 12 * scale, 3)
        assert torch.equal(got, expected), name
        flat = torch.tensor([[True, False], [False, False], [False, True]])  # drawn grey, as blend draws it
        colours = apply_colormap(big_maps, name, signed)
        heat = torch.where(flat[:, :, None, None, None], torch.full_like(colours, NEUTRAL), colours)
        grey = blend(to_rgb(big_images)[:, None], heat, alpha)
        assert torch.equal(overlay(images, maps, name, alpha, signed, scale, flat), grey), name
        assert not torch.equal(grey[0, 0], expected[0, 0]) or alpha == 0.0
    gray = overlay(images[:, :1], maps, "gray", alpha, signed)  # one-channel images are drawn gray
    heat = apply_colormap(maps, "gray", signed)
    assert torch.equal(gray, blend(to_rgb(images[:, :1])[:, None], heat, alpha))
