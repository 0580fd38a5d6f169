"""Figures: grid geometry, row/column order and captions from pixels and recorded text, normalisation,
the bounded collector, and the ``explain --figures`` / ``sweep`` commands on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import tiny_cnn
import torch
from PIL import Image
from typer.testing import CliRunner

from xaicli.cli.app import app
from xaicli.engine import ExplainedBatch, Explanations, Slot
from xaicli.engine.discover import InputImage
from xaicli.outputs.manifest import read_manifest
from xaicli.render import text as T
from xaicli.render.colormaps import lut
from xaicli.render.figures import (
    FigureStyle,
    GridCell,
    GridRow,
    compare_grid,
    format_prob,
    render_grid,
    sweep_grid,
    topk_grid,
)
from xaicli.runs.figures import FigureCollector

H = W = 8
JET = (lut("jet").numpy() * 255).round().astype(int)  # (256, 3)


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def solid(value: float, channels: int = 1) -> np.ndarray:
    return np.full((channels, H, W), value, dtype=np.float32)


def quadrant_map(q: int) -> np.ndarray:
    """1 in quadrant q (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right), 0 elsewhere."""
    m = np.zeros((H, W), dtype=np.float32)
    r, c = divmod(q, 2)
    m[r * H // 2:(r + 1) * H // 2, c * W // 2:(c + 1) * W // 2] = 1.0
    return m


def pixel(fig, row: int, col: int, fx: float = 0.5, fy: float = 0.5) -> tuple[int, ...]:
    """The pixel at fraction (fx, fy) of cell (row, col)."""
    x0, y0, x1, y1 = fig.boxes[(row, col)]
    return fig.image.getpixel((int(x0 + fx * (x1 - x0)), int(y0 + fy * (y1 - y0))))


def close(a, b, tol: int = 2) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b, strict=True))


# --- geometry -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", [48, 112])
def test_grid_size_follows_columns_and_cell_size(cell: int) -> None:
    style = FigureStyle(cell_size=cell)
    sizes = {}
    for n in (2, 3, 5):
        rows = [GridRow("original", [GridCell(solid(0.5)) for _ in range(n)]),
                GridRow("map", [GridCell(solid(0.5), quadrant_map(0)) for _ in range(n)])]
        fig = render_grid(rows, title="t", style=style)
        lay = fig.layout
        assert fig.image.size == (lay.width, lay.height)
        for r in range(2):
            for c in range(n):
                x0, y0, x1, y1 = fig.boxes[(r, c)]
                assert (x1 - x0, y1 - y0) == (cell, cell)  # square inputs -> square cells
                assert x0 == lay.left + c * (cell + style.gap)
        assert lay.grid_right == lay.left + n * (cell + style.gap) - style.gap
        sizes[n] = (fig.image.size[0], lay.grid_bottom - lay.top)
    # each extra column adds exactly one cell and one gap; the grid's height does not depend on the columns
    assert sizes[3][0] - sizes[2][0] == cell + style.gap
    assert sizes[5][0] - sizes[3][0] == 2 * (cell + style.gap)
    assert sizes[2][1] == sizes[3][1] == sizes[5][1]


def test_non_square_inputs_keep_their_aspect_ratio() -> None:
    img = np.zeros((1, 10, 20), dtype=np.float32)  # H=10, W=20
    fig = render_grid([GridRow("r", [GridCell(img)])], title="t", style=FigureStyle(cell_size=80))
    x0, y0, x1, y1 = fig.boxes[(0, 0)]
    assert (x1 - x0, y1 - y0) == (80, 40)


# --- order and captions -----------------------------------------------------------------------------------


def test_topk_grid_columns_rows_and_captions() -> None:
    """Columns follow the images, rows follow the ranks; every caption is the data passed in."""
    style = FigureStyle(cell_size=64, alpha=1.0)  # alpha 1: overlay pixels are the pure colormap
    greys = [0.2, 0.5, 0.8]
    images = [solid(g) for g in greys]
    maps = [[quadrant_map(r) for r in range(3)] for _ in images]  # rank r lights quadrant r
    names = [["Bag", "Shirt", "Coat"], ["Bag", "Sandal", "Dress"], ["Shirt", "Bag", "Coat"]]
    probs = [[0.9, 0.05, 0.01], [0.5, 0.3, 0.0004], [0.6, 0.3, 0.1]]
    fig = topk_grid(images, maps, names, probs, row_labels=["top-1", "top-2", "top-3"], title="Bag",
                    names=["a", "b", "c"], labels=["Bag", "Bag", "Bag"], style=style)

    assert fig.row_labels == ["original", "top-1", "top-2", "top-3"]
    assert fig.col_headers == ["a", "b", "c"]
    assert fig.captions[0] == ["true: Bag"] * 3
    for r in range(3):
        assert fig.captions[r + 1] == [f"{names[i][r]}\n{format_prob(probs[i][r])}" for i in range(3)]
    assert fig.captions[3][1] == "Dress\n<0.1%"
    for i, g in enumerate(greys):  # originals: column i shows image i
        v = round(g * 255)
        assert close(pixel(fig, 0, i), (v, v, v))
    centres = {0: (0.25, 0.25), 1: (0.75, 0.25), 2: (0.25, 0.75), 3: (0.75, 0.75)}
    for r in range(3):  # overlay row r+1 is hot exactly in quadrant r
        for i in range(3):
            for q, (fx, fy) in centres.items():
                want = JET[255] if q == r else JET[0]
                assert close(pixel(fig, r + 1, i, fx, fy), want), (r, i, q)


def test_wrong_top1_caption_is_drawn_in_red() -> None:
    style = FigureStyle(cell_size=64)
    fig = topk_grid([solid(1.0)], [[quadrant_map(0)]], [["Shirt"]], [[0.7]], row_labels=["top-1"], title="x",
                    labels=["Coat"], style=style)
    x0, _, x1, y1 = fig.boxes[(1, 0)]
    strip = np.asarray(fig.image.crop((x0, y1, x1, y1 + 2 * T.line_height(T.get_font(style.font_size)))))
    red = (strip[..., 0] > 150) & (strip[..., 1] < 90) & (strip[..., 2] < 90)
    assert red.sum() > 10


def test_sweep_grid_rows_are_layers_in_order() -> None:
    style = FigureStyle(cell_size=48, alpha=1.0)
    images = [solid(0.1 * (i + 1), 3) for i in range(4)]
    maps = [[quadrant_map(j) for j in range(3)] for _ in images]
    fig = sweep_grid(images, maps, ["l0", "l1", "l2"], title="s", target_names=["Bag"] * 4, probs=[0.5] * 4,
                     style=style)
    assert fig.row_labels == ["original", "l0", "l1", "l2"]
    assert fig.captions[0] == ["Bag\n50.0%"] * 4
    assert fig.captions[1] == [None] * 4
    assert close(pixel(fig, 2, 3, 0.75, 0.25), JET[255]) and close(pixel(fig, 2, 3, 0.25, 0.25), JET[0])
    assert close(pixel(fig, 3, 0, 0.25, 0.75), JET[255])


def test_compare_grid_is_one_row_per_image_with_methods_as_columns() -> None:
    style = FigureStyle(cell_size=48, alpha=1.0)
    images = [solid(0.3), solid(0.6)]
    maps = [[quadrant_map(0), quadrant_map(3)], [quadrant_map(1), quadrant_map(2)]]
    fig = compare_grid(images, maps, ["gradcam\nlayer", "scorecam\nlayer"], title="c",
                       target_names=["Bag", "Coat"], probs=[0.25, 0.75], names=["one", "two"], style=style)
    assert fig.row_labels == ["one", "two"]
    assert fig.col_headers == ["original", "gradcam\nlayer", "scorecam\nlayer"]
    assert fig.captions == [[None, "Bag\n25.0%", "Bag\n25.0%"], [None, "Coat\n75.0%", "Coat\n75.0%"]]
    assert close(pixel(fig, 0, 0), (77, 77, 77))
    assert close(pixel(fig, 0, 2, 0.75, 0.75), JET[255]) and close(pixel(fig, 1, 1, 0.75, 0.25), JET[255])


def test_signed_maps_use_a_diverging_colormap_with_zero_in_the_middle() -> None:
    style = FigureStyle(cell_size=48, alpha=1.0)
    m = np.zeros((H, W), dtype=np.float32)
    m[:, : W // 2] = -2.0
    m[:, W // 2:] = 1.0
    fig = topk_grid([solid(0.5)], [[m]], [["Bag"]], [[0.9]], row_labels=["top-1"], title="s", signed=[True],
                    style=style)
    cool = (lut("coolwarm").numpy() * 255).round().astype(int)
    assert close(pixel(fig, 1, 0, 0.25), cool[0])  # -2 / 2 = -1
    assert close(pixel(fig, 1, 0, 0.75), cool[191], tol=3)  # 1 / 2 = 0.5 -> (0.5 + 1) / 2 * 255
    assert len(fig.colorbars) == 1 and "-1 to 1" in fig.legend[0]


# --- normalisation, colorbar, upscaling, text ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["per_map", "row"])
def test_normalisation_per_map_or_shared_by_the_row(mode: str) -> None:
    style = FigureStyle(cell_size=48, alpha=1.0, normalise=mode)
    full, half = quadrant_map(0), quadrant_map(0) * 0.5
    row = GridRow("r", [GridCell(solid(0), full), GridCell(solid(0), half)])
    fig = render_grid([row], title="n", style=style)
    assert close(pixel(fig, 0, 0, 0.25, 0.25), JET[255])
    want = JET[255] if mode == "per_map" else JET[128]  # 0.5 of the row's range -> index round(127.5)
    assert close(pixel(fig, 0, 1, 0.25, 0.25), want)
    assert close(pixel(fig, 0, 1, 0.75, 0.75), JET[0])
    if mode == "row":
        assert fig.scales == [(0.0, 1.0)]
        assert "shared across each row" in fig.legend[0]
    else:
        assert fig.scales == [None]
        assert "per map" in fig.legend[0]


def test_colorbar_runs_from_one_at_the_top_to_zero_at_the_bottom() -> None:
    fig = render_grid([GridRow("r", [GridCell(solid(0.5), quadrant_map(0))])], title="c",
                      style=FigureStyle(cell_size=64))
    (x0, y0, x1, y1), = fig.colorbars
    xc = (x0 + x1) // 2
    assert close(fig.image.getpixel((xc, y0)), JET[255], tol=3)
    assert close(fig.image.getpixel((xc, y1 - 1)), JET[0], tol=3)
    assert x0 > fig.layout.grid_right  # beside the grid


def test_png_bytes_are_the_figure(tmp_path: Path) -> None:
    fig = render_grid([GridRow("r", [GridCell(solid(0.5), quadrant_map(0))])], title="p",
                      style=FigureStyle(cell_size=32))
    path = tmp_path / "fig.png"
    path.write_bytes(fig.png_bytes())  # rendering writes no files: the caller stores the bytes
    assert fig.png_bytes() == path.read_bytes()
    with Image.open(path) as im:
        assert im.format == "PNG" and np.array_equal(np.asarray(im), np.asarray(fig.image))


def test_no_colorbar_without_maps() -> None:
    fig = render_grid([GridRow("r", [GridCell(solid(0.5))])], title="c")
    assert fig.colorbars == [] and fig.legend == []


@pytest.mark.parametrize("resample", ["nearest", "bicubic"])
def test_small_inputs_are_upscaled_as_configured(resample: str) -> None:
    checker = (np.indices((H, W)).sum(0) % 2).astype(np.float32)[None]  # 0/1 checkerboard
    fig = render_grid([GridRow("r", [GridCell(checker)])], title="u", style=FigureStyle(cell_size=64,
                                                                                         resample=resample))
    cell = np.asarray(fig.image.crop(fig.boxes[(0, 0)]))[..., 0]
    values = set(np.unique(cell).tolist())
    if resample == "nearest":
        assert values == {0, 255}
        assert (cell[:8, :8] == cell[0, 0]).all()  # 8x8 blocks
    else:
        assert len(values) > 2


def test_fonts_scale_with_the_requested_size() -> None:
    small, large = T.get_font(12), T.get_font(24)
    assert T.text_width("Ankle boot", large) > 1.6 * T.text_width("Ankle boot", small)
    assert T.line_height(large) > T.line_height(small)
    assert T.fit_text("a very long class name indeed", small, 60).endswith("…")
    assert T.text_width(T.fit_text("a very long class name indeed", small, 60), small) <= 60
    assert FigureStyle(cell_size=224).font_size > FigureStyle(cell_size=112).font_size


# --- the collector ------------------------------------------------------------------------------------------


def _batch(paths: list[str], preds: list[int]) -> ExplainedBatch:
    b = len(paths)
    items = [InputImage(Path(p), PurePosixPath(p)) for p in paths]
    result = Explanations(torch.tensor(preds)[:, None], torch.full((b, 1), 0.5),
                          {("gradcam", "l"): torch.rand(b, 1, H, W)})
    return ExplainedBatch(items, torch.rand(b, 1, H, W), result)


def test_collector_keeps_the_first_n_per_class_whatever_the_arrival_order() -> None:
    classes = ["cat", "dog"]
    paths = [f"{'cat' if i % 2 else 'dog'}/img_{i:02d}.png" for i in range(20)]
    order = {Path(p): i for i, p in enumerate(paths)}
    col = FigureCollector(3, [Slot("top", 1)], classes, order=order)
    for start in (15, 10, 5, 0):  # later images first, like a resumed run
        chunk = paths[start:start + 5]
        col(_batch(chunk, [0] * len(chunk)))
    assert {g: [s.index for s in ss] for g, ss in col.groups.items()} == {"dog": [0, 2, 4], "cat": [1, 3, 5]}
    assert all(s.label == s.group for ss in col.groups.values() for s in ss)
    assert sum(len(ss) for ss in col.groups.values()) == 6  # bounded: classes x per_class


def test_collector_groups_unlabelled_images_by_prediction() -> None:
    col = FigureCollector(2, [Slot("top", 1)], ["cat", "dog"])
    col(_batch(["a.png", "b.png", "c.png", "d.png"], [1, 1, 0, 1]))
    assert {g: [s.item.rel.name for s in ss] for g, ss in col.groups.items()} == {
        "dog": ["a.png", "b.png"], "cat": ["c.png"]}
    assert all(s.label is None for ss in col.groups.values() for s in ss)


# --- commands ---------------------------------------------------------------------------------------------


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    images = tiny_cnn.write_images(tmp_path / "imgs", per_class=3)
    return images, tmp_path


def test_explain_figures_writes_one_topk_figure_per_class_matching_the_manifest(tiny) -> None:
    images, tmp = tiny
    cfg = tiny_cnn.write_config(tmp / "tiny.yaml", images_per_class=2, compare=True, cell_size=48)
    out = tmp / "out"
    res = CliRunner().invoke(app, ["explain", str(images), "-c", str(cfg), "-o", str(out), "--figures", "-q"])
    assert res.exit_code == 0, res.output
    for folder in tiny_cnn.FOLDERS:
        assert (out / "figures" / "topk" / f"{folder}.png").is_file()
        assert (out / "compare" / folder / "img_0.png.png").is_file()
        assert not (out / "compare" / folder / "img_2.png.png").exists()  # only the figures' images
    assert (out / "index.html").is_file()

    rows = {(r["image"], r["slot"]): r for r in read_manifest(out / "manifest.jsonl")}
    records = json.loads((out / "figures" / "figures.json").read_text())["figures"]
    topk = [r for r in records if r["kind"] == "topk"]
    assert [r["class"] for r in topk] == tiny_cnn.CLASSES  # in class order, true label from the folder
    for rec in topk:
        assert len(rec["images"]) == 2 and rec["row_labels"] == ["original", "top-1", "top-2"]
        assert Image.open(out / rec["path"]).size == tuple(rec["size"])
        assert rec["captions"][0] == [f"true: {rec['class']}"] * 2
        for r, slot in enumerate(["top1", "top2"], start=1):
            want = [f"{rows[(img, slot)]['target_name']}\n{format_prob(rows[(img, slot)]['score'])}"
                    for img in rec["images"]]
            assert rec["captions"][r] == want


def test_resumed_explain_rebuilds_identical_figures(tiny) -> None:
    images, tmp = tiny
    cfg = tiny_cnn.write_config(tmp / "tiny.yaml", topk=True, images_per_class=2, cell_size=48)
    out = tmp / "out"
    args = ["explain", str(images), "-c", str(cfg), "-o", str(out), "-q"]
    assert CliRunner().invoke(app, args).exit_code == 0
    first = (out / "figures" / "topk" / "dog.png").read_bytes()
    (out / "figures" / "topk" / "dog.png").unlink()
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0
    assert json.loads(res.stdout)["images_skipped"] == 9
    assert (out / "figures" / "topk" / "dog.png").read_bytes() == first


def test_sweep_command_writes_a_figure_per_class_and_a_summary(tiny) -> None:
    images, tmp = tiny
    cfg = tiny_cnn.write_config(tmp / "tiny.yaml", cell_size=48)
    out = tmp / "out"
    res = CliRunner().invoke(app, ["sweep", str(images), "-c", str(cfg), "-o", str(out), "--layers", "auto",
                                   "--images-per-class", "2", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    layers = ["features.0.bn", "features.0.relu", "features.1.bn", "features.1.relu"]
    assert [x["name"] for x in summary["layers"]] == layers
    assert [x["role"] for x in summary["layers"]] == ["pre", "post", "pre", "post"]
    assert summary["images_explained"] == 6
    for folder in tiny_cnn.FOLDERS:
        assert (out / "sweep" / f"{folder}.png").is_file()
    assert (out / "sweep" / "summary.png").is_file() and (out / "index.html").is_file()
    records = json.loads((out / "sweep" / "sweep.json").read_text())["figures"]
    by_kind = {r["kind"]: r for r in records}
    assert by_kind["sweep"]["row_labels"][0] == "original"
    assert [lbl.split("\n")[0] for lbl in by_kind["sweep"]["row_labels"][1:]] == layers
    assert len(by_kind["sweep-summary"]["images"]) == 3  # one image per class


def test_sweep_explicit_layers_and_unlabelled_images(tmp_path: Path) -> None:
    images = tiny_cnn.write_images(tmp_path / "flat", per_class=4, folders=["photos"])
    cfg = tiny_cnn.write_config(tmp_path / "tiny.yaml", cell_size=32)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["sweep", str(images), "-c", str(cfg), "-o", str(out), "-l",
                                   "features.0,features.1.relu", "-q"])
    assert res.exit_code == 0, res.output
    records = json.loads((out / "sweep" / "sweep.json").read_text())["figures"]
    assert records[0]["layers"] == ["features.0", "features.1.relu"]
    # "photos" names no class: images are grouped under their predicted class
    assert {r["class"] for r in records if r["kind"] == "sweep"} <= set(tiny_cnn.CLASSES)


def test_sweep_usage_errors_exit_2(tiny) -> None:
    images, tmp = tiny
    cfg = tiny_cnn.write_config(tmp / "tiny.yaml")
    base = ["sweep", str(images), "-c", str(cfg), "-o", str(tmp / "out")]
    res = CliRunner().invoke(app, [*base, "--layers", "features.1.bnn"])
    assert res.exit_code == 2 and "features.1.bn" in res.output
    res = CliRunner().invoke(app, [*base, "--method", "saliency"])
    assert res.exit_code == 2 and "CAM method" in res.output


def test_sweep_metric_scores_every_layer_and_names_the_best(tiny) -> None:
    """``--metric insertion``: each layer's mean is the mean of the insertion of its (normalised) maps,
    recomputed here independently from the sweep's own explainer; the best layer is the argmax."""
    import torch

    from xaicli.config import load_config
    from xaicli.engine import explain_images
    from xaicli.methods.postprocess import normalise_map
    from xaicli.metrics import evaluate_maps
    from xaicli.models.loader import load_model
    from xaicli.runs.sweep import sweep_config

    images, tmp = tiny
    cfg_path = tiny_cnn.write_config(tmp / "tiny.yaml", cell_size=32)
    out = tmp / "out"
    res = CliRunner().invoke(app, ["sweep", str(images), "-c", str(cfg_path), "-o", str(out), "--layers",
                                   "features.0.relu,features.1.relu", "-n", "1", "--metric", "insertion",
                                   "--json"])
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)["metric"]
    assert scores["name"] == "insertion" and scores["higher_is_better"] is True
    means = {row["layer"]: row["mean"] for row in scores["layers"]}
    assert scores["best"] == max(means, key=means.get)
    assert all(row["n"] == 3 for row in scores["layers"])

    from xaicli.engine import Explainer

    cfg = load_config(cfg_path)
    explainer = Explainer(sweep_config(cfg, "gradcam", list(means)), load_model(cfg))
    pics = sorted(images.rglob("*.png"))
    chosen = [next(p for p in pics if p.parent.name == folder) for folder in tiny_cnn.FOLDERS]
    batch = torch.stack([explainer.pre.load(str(p)) for p in chosen])
    result = explain_images(explainer, batch)
    x = explainer.normalise(batch)
    for layer, mean in means.items():
        maps = normalise_map(result.maps[("gradcam", layer)])
        got = evaluate_maps(explainer.loaded.model, x, maps, result.targets, ["insertion"])["insertion"]
        assert mean == pytest.approx(float(got.values.mean()), abs=1e-5)
    sweep_json = json.loads((out / "sweep" / "sweep.json").read_text())
    summary = next(r for r in sweep_json["figures"] if r["kind"] == "sweep-summary")
    assert summary["row_labels"][1].endswith(f"insertion {means['features.0.relu']:.3f}"
                                             + (" (best)" if scores["best"] == "features.0.relu" else ""))


def test_sweep_metric_must_be_a_faithfulness_metric(tiny) -> None:
    images, tmp = tiny
    cfg = tiny_cnn.write_config(tmp / "tiny.yaml")
    res = CliRunner().invoke(app, ["sweep", str(images), "-c", str(cfg), "-o", str(tmp / "out"),
                                   "--metric", "sparseness"])
    assert res.exit_code == 2 and "'insertion'" in res.output
