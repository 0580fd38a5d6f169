"""Figure grids drawn with Pillow: per-class top-k grids, layer sweeps and method comparisons.

Everything here is a pure function of arrays and caption data and returns a :class:`RenderedFigure`:
the PIL image plus what was written on it (title, row labels, column headers, captions, legend) and
where each cell sits, so tests can check both pixels and text. Nothing here writes files:
:meth:`RenderedFigure.png_bytes` encodes the figure and the caller decides where (and how atomically)
to store it.

Conventions shared by all grids
-------------------------------
* A grid is a list of :class:`GridRow`; a row either shows the original images or heatmap overlays.
* Images are ``(C, H, W)`` or ``(H, W, C)`` arrays in [0, 1] (C = 1 or 3) and are upscaled to
  ``cell_size`` pixels wide with ``resample`` ("nearest" keeps 28x28 pixels crisp, "bicubic" smooths).
* Maps are ``(H, W)`` arrays of any range. They are normalised for display (``normalise``):

  - ``"per_map"`` (default): each map by its own min and max, so every cell uses the full colour range;
  - ``"row"``: one min and max shared by all maps of a row, so cells in a row compare in magnitude
    (meaningful when the method's own per-map normalisation is off: ``options: {normalise: false}``).

  Signed maps (``GridCell.signed``) are scaled by their largest magnitude to [-1, 1] instead, 0 staying
  at the centre of a diverging colormap. The legend under each figure states which rule was used and
  the colorbar beside the grid shows the colour scale.
* The overlay is ``(1 - alpha) * image + alpha * colour(map)``, computed by the per-image overlays' own
  code (:func:`~xaicli.render.colormaps.apply_colormap` and :func:`~xaicli.render.overlay.blend`, here
  on CPU tensors), so a map has the same pixels in a figure cell as in its overlay file and the
  colorbar shows exactly those colours.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageDraw

from xaicli.render import text as T
from xaicli.render.colormaps import apply_colormap, resolve
from xaicli.render.overlay import blend, to_uint8

Normalise = Literal["per_map", "row"]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)

WHITE = (255, 255, 255)
INK = (25, 25, 25)
MUTED = (95, 95, 95)
ALERT = (200, 30, 30)
EMPTY = (238, 238, 238)
_EPS = 1e-12


@dataclass(frozen=True)
class FigureStyle:
    """How figures look; ``from_config`` reads the ``figures`` and ``output`` sections of a config."""

    cell_size: int = 112
    resample: Literal["nearest", "bicubic"] = "nearest"
    normalise: Normalise = "per_map"
    colormap: str = "jet"
    alpha: float = 0.5

    @classmethod
    def from_config(cls, cfg) -> FigureStyle:
        f, o = cfg.figures, cfg.output
        return cls(f.cell_size, f.resample, f.normalise, o.colormap, o.alpha)

    # sizes derived from the cell size, so text stays proportionate and readable at any input size
    @property
    def font_size(self) -> int:
        return int(np.clip(round(self.cell_size * 0.11), 11, 22))

    @property
    def pad(self) -> int:
        return max(6, self.cell_size // 14)

    @property
    def gap(self) -> int:
        return max(3, self.cell_size // 28)


@dataclass
class GridCell:
    """One cell: an image, optionally with a map over it, and an optional caption (may contain newlines)."""

    image: np.ndarray | None  # (C, H, W) / (H, W, C) in [0, 1] or uint8; None: an empty cell
    map: np.ndarray | None = None  # (H, W) raw values
    caption: str | None = None
    caption_alert: bool = False  # caption drawn in red (e.g. a wrong top-1 prediction)
    signed: bool = False  # the map is signed (diverging colormap, 0 in the middle)


@dataclass
class GridRow:
    label: str
    cells: list[GridCell]


@dataclass
class RenderedFigure:
    """A finished figure and everything written on it."""

    image: Image.Image
    title: str
    row_labels: list[str]
    col_headers: list[str]
    captions: list[list[str | None]]  # [row][col]
    boxes: dict[tuple[int, int], Box]  # (row, col) -> pixel box of the image cell
    legend: list[str]
    scales: list[tuple[float, float] | None]  # per row: the shared (min, max) with normalise="row"
    layout: GridLayout
    colorbars: list[Box] = field(default_factory=list)

    def png_bytes(self) -> bytes:
        """The figure as PNG (zlib level 6: figures are few and kept, so smaller beats faster).

        Rendering writes no files; the caller stores the bytes where it wants them, e.g.
        ``atomic.write_bytes(path, fig.png_bytes())``.
        """
        buf = io.BytesIO()
        self.image.save(buf, format="PNG", compress_level=6)
        return buf.getvalue()


# --- pixels -------------------------------------------------------------------------------------------


def format_prob(p: float) -> str:
    """Probabilities as captions show them: ``97.2%``, ``0.4%``, ``<0.1%``."""
    pct = 100.0 * float(p)
    return "<0.1%" if 0 < pct < 0.05 else f"{pct:.1f}%"


def to_hwc(image: np.ndarray) -> np.ndarray:
    """(C, H, W), (H, W, C) or (H, W) with C in {1, 3}, float in [0, 1] or uint8 -> (H, W, 3) float32."""
    raw = np.asarray(image)
    a = raw.astype(np.float32) / 255.0 if raw.dtype == np.uint8 else raw.astype(np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.clip(a, 0.0, 1.0)


def normalise_maps(maps: Sequence[np.ndarray], mode: Normalise, signed: bool = False
                   ) -> tuple[list[np.ndarray], tuple[float, float] | None]:
    """Scale maps for display to [0, 1] (or [-1, 1] by the largest magnitude when ``signed``), each by
    its own range (``per_map``) or all by one shared range (``row``).

    Returns the scaled maps and, for ``row``, the shared range (signed: (-m, m)). A constant map
    (nothing to show) becomes all zeros.
    """
    arrs = [np.asarray(m, dtype=np.float32) for m in maps]
    if not arrs:
        return [], None

    def scale(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
        if signed:
            m = max(abs(lo), abs(hi))
            return a / m if m > _EPS else np.zeros_like(a)
        return (a - lo) / (hi - lo) if hi - lo > _EPS else np.zeros_like(a)

    if mode == "row":
        lo, hi = float(min(a.min() for a in arrs)), float(max(a.max() for a in arrs))
        m = max(abs(lo), abs(hi))
        return [scale(a, lo, hi) for a in arrs], ((-m, m) if signed else (lo, hi))
    return [scale(a, float(a.min()), float(a.max())) for a in arrs], None


def _resample(mode: str) -> Image.Resampling:
    return Image.Resampling.NEAREST if mode == "nearest" else Image.Resampling.BICUBIC


def upscale_image(image: np.ndarray, size: tuple[int, int], resample: str) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> (h, w, 3) float at ``size`` = (w, h)."""
    pil = Image.fromarray((image * 255).round().astype(np.uint8))
    if pil.size != size:
        pil = pil.resize(size, _resample(resample))
    return np.asarray(pil, dtype=np.float32) / 255.0


def upscale_map(values: np.ndarray, size: tuple[int, int], resample: str) -> np.ndarray:
    """(H, W) float -> (h, w) at ``size`` = (w, h), in the same value range (bicubic overshoot clipped)."""
    pil = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), mode="F")
    if pil.size != size:
        pil = pil.resize(size, _resample(resample))
    return np.clip(np.asarray(pil, dtype=np.float32), float(values.min()), float(values.max()))


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(a, np.float32, ["C", "W"]))


def colourise(values: np.ndarray, colormap: str, signed: bool = False) -> np.ndarray:
    """(h, w) in [0, 1] ([-1, 1] if signed) -> uint8 (h, w, 3) colours, as the overlays colour them."""
    return to_uint8(apply_colormap(_tensor(values), colormap, signed)).numpy()


def blend_cell(image: np.ndarray, scaled_map: np.ndarray, style: FigureStyle, signed: bool = False
               ) -> np.ndarray:
    """(h, w, 3) image and a display-scaled (h, w) map -> uint8 overlay, by the per-image overlay's own
    :func:`~xaicli.render.overlay.blend` (same colours, same rounding)."""
    heat = apply_colormap(_tensor(scaled_map), style.colormap, signed)
    return blend(_tensor(image), heat, style.alpha).numpy()


# --- layout -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes (pixels). Width = left + n_cols * pitch_x - gap [+ pad + colorbars] + pad."""

    cell_w: int
    cell_h: int
    left: int  # x of the first cell: padding + row-label column + padding
    top: int  # y of the first row: padding + title lines + column headers
    pitch_x: int  # cell_w + gap
    row_tops: tuple[int, ...]
    grid_right: int
    grid_bottom: int
    width: int
    height: int

    def cell_box(self, row: int, col: int) -> Box:
        x0 = self.left + col * self.pitch_x
        return (x0, self.row_tops[row], x0 + self.cell_w, self.row_tops[row] + self.cell_h)


def _caption_lines(row: GridRow) -> int:
    return max((c.caption.count("\n") + 1 for c in row.cells if c.caption), default=0)


def colorbar_width(style: FigureStyle) -> int:
    """Width of one colorbar with its tick labels."""
    return max(10, style.cell_size // 8) + style.gap + T.text_width("-0.75", T.get_font(style.font_size)) + 4


def layout_grid(rows: Sequence[GridRow], n_cols: int, cell_w: int, cell_h: int, style: FigureStyle, *,
                title_lines: int, header_lines: int, label_w: int, n_colorbars: int,
                legend_lines: int) -> GridLayout:
    """Grid geometry: rows are cell_h plus their caption lines; a gap separates cells and rows."""
    lh = T.line_height(T.get_font(style.font_size))
    th = T.line_height(T.get_font(style.font_size + 4, bold=True))
    pad, gap = style.pad, style.gap
    top = pad + th + (title_lines - 1) * lh + pad + (header_lines * lh + gap if header_lines else 0)
    left = pad + label_w + pad
    row_tops = []
    y = top
    for row in rows:
        row_tops.append(y)
        n_cap = _caption_lines(row)
        y += cell_h + (n_cap * lh + gap if n_cap else 0) + gap
    grid_bottom = y - gap
    grid_right = left + n_cols * (cell_w + gap) - gap
    width = grid_right + n_colorbars * (pad + colorbar_width(style)) + pad
    height = grid_bottom + pad + legend_lines * lh + pad
    return GridLayout(cell_w, cell_h, left, top, cell_w + gap, tuple(row_tops), grid_right, grid_bottom,
                      width, height)


# --- the generic grid -----------------------------------------------------------------------------------


def render_grid(rows: Sequence[GridRow], *, title: str, subtitle: str | None = None,
                col_headers: Sequence[str] | None = None, style: FigureStyle = FigureStyle(),
                legend: Sequence[str] = ()) -> RenderedFigure:
    """Draw ``rows`` of cells under a title, with row labels, captions, colorbar(s) and a legend.

    Maps are normalised as ``style.normalise`` says (see the module docstring); with ``row``, signed and
    unsigned maps of a row are scaled separately. The first legend line documents the normalisation.
    """
    n_cols = max((len(r.cells) for r in rows), default=0)
    first = next((c.image for r in rows for c in r.cells if c.image is not None), None)
    h0, w0 = to_hwc(first).shape[:2] if first is not None else (1, 1)
    cell_w, cell_h = style.cell_size, max(1, round(style.cell_size * h0 / w0))
    font, bold = T.get_font(style.font_size), T.get_font(style.font_size, bold=True)
    title_font = T.get_font(style.font_size + 4, bold=True)
    lh, pad = T.line_height(font), style.pad
    kinds = sorted({c.signed for r in rows for c in r.cells if c.map is not None})  # [False], [True], both
    scaled, scales = _scale_rows(rows, kinds, style.normalise)

    # text blocks first: their sizes fix the layout
    label_lines = _row_label_lines(rows, scales, bold, int(style.cell_size * 1.6))
    label_w = max((T.text_width(t, bold if main else font) for lines in label_lines for t, main in lines),
                  default=0)
    headers = [[ln for part in h.split("\n") for ln in T.wrap_text(part, font, cell_w + style.gap - 2, 2)]
               for h in col_headers or []]
    full_legend = ([_normalise_legend(style, kinds)] if kinds else []) + list(legend)
    text_w = max(3 * pad + label_w + n_cols * (cell_w + style.gap) + len(kinds) * colorbar_width(style)
                 - 2 * pad, 240)
    legend_lines = [ln for item in full_legend for ln in T.wrap_text(item, font, text_w, 4)]
    sub_lines = T.wrap_text(subtitle, font, text_w, 2) if subtitle else []
    lay = layout_grid(rows, n_cols, cell_w, cell_h, style, title_lines=1 + len(sub_lines),
                      header_lines=max((len(h) for h in headers), default=0), label_w=label_w,
                      n_colorbars=len(kinds), legend_lines=len(legend_lines))
    img = Image.new("RGB", (max(lay.width, T.text_width(title, title_font) + 2 * pad), lay.height), WHITE)
    draw = ImageDraw.Draw(img)

    T.draw_text(draw, (pad, pad), title, title_font, INK)
    T.draw_lines(draw, pad, pad + T.line_height(title_font), sub_lines, font, MUTED)
    for c, parts in enumerate(headers):  # bottom-aligned above the first row
        T.draw_lines(draw, lay.left + c * lay.pitch_x + cell_w / 2, lay.top - len(parts) * lh - style.gap,
                     parts, font, INK, anchor="ma")
    for r, lines in enumerate(label_lines):  # right-aligned, centred on the row's cells
        ly = lay.row_tops[r] + (cell_h - len(lines) * lh) / 2
        for i, (line, main) in enumerate(lines):
            T.draw_text(draw, (pad + label_w, ly + i * lh), line, bold if main else font,
                        INK if main else MUTED, anchor="ra")
    boxes, captions = _draw_cells(img, draw, rows, n_cols, scaled, lay, style)
    bars: list[Box] = []
    if kinds:
        map_rows = [r for r, row in enumerate(rows) if any(c.map is not None for c in row.cells)]
        y_top, y_bot = lay.row_tops[map_rows[0]], lay.row_tops[map_rows[-1]] + cell_h
        for i, signed in enumerate(kinds):
            x = lay.grid_right + pad + i * (colorbar_width(style) + pad)
            bars.append(_draw_colorbar(img, draw, x, y_top, y_bot, style, signed))
    T.draw_lines(draw, pad, lay.grid_bottom + pad, legend_lines, font, MUTED)
    return RenderedFigure(img, title, [row.label for row in rows], list(col_headers or []), captions, boxes,
                          full_legend, scales, lay, bars)


def _scale_rows(rows: Sequence[GridRow], kinds: Sequence[bool], mode: Normalise
                ) -> tuple[dict[tuple[int, int], np.ndarray], list[tuple[float, float] | None]]:
    """Display-scaled map of every (row, col) with a map, and each row's shared range (``row`` mode)."""
    scaled: dict[tuple[int, int], np.ndarray] = {}
    scales: list[tuple[float, float] | None] = []
    for r, row in enumerate(rows):
        row_scale = None
        for signed in kinds:
            idx = [c for c, cell in enumerate(row.cells) if cell.map is not None and cell.signed == signed]
            maps, rng = normalise_maps([row.cells[c].map for c in idx], mode, signed)
            scaled.update(zip(((r, c) for c in idx), maps, strict=True))
            row_scale = row_scale or (rng if idx else None)
        scales.append(row_scale)
    return scaled, scales


def _row_label_lines(rows: Sequence[GridRow], scales: Sequence[tuple[float, float] | None], font,
                     max_width: int) -> list[list[tuple[str, bool]]]:
    """Per row: (line, is_label) pairs: the wrapped label, then the shared range when there is one."""
    out = []
    for row, rng in zip(rows, scales, strict=True):
        lines = [(ln, True) for part in row.label.split("\n") for ln in T.wrap_text(part, font, max_width, 2)]
        if rng is not None:
            lines.append((f"range {_num(rng[0])} – {_num(rng[1])}", False))
        out.append(lines)
    return out


def _draw_cells(img: Image.Image, draw: ImageDraw.ImageDraw, rows: Sequence[GridRow], n_cols: int,
                scaled: dict[tuple[int, int], np.ndarray], lay: GridLayout, style: FigureStyle
                ) -> tuple[dict[tuple[int, int], Box], list[list[str | None]]]:
    """Paste every cell (image, or image + coloured map) and draw its caption below it."""
    font = T.get_font(style.font_size)
    size = (lay.cell_w, lay.cell_h)
    boxes: dict[tuple[int, int], Box] = {}
    captions: list[list[str | None]] = []
    for r, row in enumerate(rows):
        row_caps: list[str | None] = []
        for c in range(n_cols):
            box = boxes[(r, c)] = lay.cell_box(r, c)
            cell = row.cells[c] if c < len(row.cells) else GridCell(None)
            row_caps.append(cell.caption)
            if cell.image is None:
                draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=EMPTY)
                continue
            pixels = upscale_image(to_hwc(cell.image), size, style.resample)
            if cell.map is not None:
                heat = upscale_map(scaled[(r, c)], size, style.resample)
                tile = blend_cell(pixels, heat, style, cell.signed)
            else:
                tile = (pixels * 255).round().astype(np.uint8)
            img.paste(Image.fromarray(tile), box[:2])
            if cell.caption:
                cap = [T.fit_text(s, font, lay.pitch_x - 2) for s in cell.caption.split("\n")]
                T.draw_lines(draw, box[0] + lay.cell_w / 2, box[3] + style.gap // 2, cap, font,
                             ALERT if cell.caption_alert else INK, anchor="ma")
        captions.append(row_caps)
    return boxes, captions


def _num(v: float) -> str:
    return f"{v:.3g}"


def _normalise_legend(style: FigureStyle, kinds: Sequence[bool]) -> str:
    how = ("per map: each map is scaled by its own minimum and maximum" if style.normalise == "per_map"
           else "shared across each row: all maps of a row are scaled by the row's minimum and maximum "
                "(printed under the row label)")
    cmaps = " / ".join(f"{resolve(style.colormap, s)} ({'signed maps, -1 to 1' if s else '0 to 1'})"
                       for s in kinds)
    return (f"Colour: map value normalised {how}. Overlay: {cmaps} at alpha {style.alpha:g} over the image; "
            f"cells upscaled to {style.cell_size}px wide ({style.resample}).")


def _draw_colorbar(img: Image.Image, draw: ImageDraw.ImageDraw, x: int, y_top: int, y_bot: int,
                   style: FigureStyle, signed: bool) -> Box:
    """A vertical colour scale with ticks: 1 at the top, 0 (-1 when signed) at the bottom."""
    font = T.get_font(style.font_size)
    bar_w = max(10, style.cell_size // 8)
    h = max(2, y_bot - y_top)
    hi, lo = 1.0, (-1.0 if signed else 0.0)
    values = np.repeat(np.linspace(hi, lo, h, dtype=np.float32)[:, None], bar_w, axis=1)
    img.paste(Image.fromarray(colourise(values, style.colormap, signed)), (x, y_top))
    draw.rectangle((x - 1, y_top - 1, x + bar_w, y_top + h), outline=MUTED)
    for t in ([1.0, 0.5, 0.0, -0.5, -1.0] if signed else [1.0, 0.75, 0.5, 0.25, 0.0]):
        ty = y_top + (hi - t) / (hi - lo) * (h - 1)
        draw.line((x + bar_w, ty, x + bar_w + style.gap, ty), fill=MUTED)
        T.draw_text(draw, (x + bar_w + style.gap + 2, ty), f"{t:g}", font, INK, anchor="lm")
    return (x, y_top, x + bar_w, y_top + h)

# --- the three figure kinds ---------------------------------------------------------------------------


def topk_grid(images: Sequence[np.ndarray], maps: Sequence, target_names: Sequence[Sequence[str]],
              probs: Sequence[Sequence[float]], *, row_labels: Sequence[str], title: str,
              names: Sequence[str] | None = None, labels: Sequence[str | None] | None = None,
              signed: Sequence[bool] | None = None, style: FigureStyle = FigureStyle(),
              subtitle: str | None = None, legend: Sequence[str] = ()) -> RenderedFigure:
    """Columns = the N images of one class; rows = the originals, then one overlay row per target.

    images: N arrays (C, H, W); maps: (N, R, H, W) for R overlay rows (top-1..top-k, or method x layer x
    rank); target_names / probs: (N, R), the explained class and its probability, which caption each
    overlay cell ("Bag" over "97.2%"); row_labels: R; names: N column headers (file names); labels: N
    true classes, captioned under the originals (a top-1 caption that disagrees is drawn in red);
    signed: R flags for signed methods.
    """
    n = len(images)
    rows = [GridRow("original", [GridCell(images[i], caption=f"true: {labels[i]}" if labels and labels[i]
                                          else None) for i in range(n)])]
    for r, row_label in enumerate(row_labels):
        cells = []
        for i in range(n):
            name = target_names[i][r]
            wrong = bool(labels and labels[i] and r == 0 and name != labels[i])
            cells.append(GridCell(images[i], maps[i][r], f"{name}\n{format_prob(probs[i][r])}", wrong,
                                  bool(signed and signed[r])))
        rows.append(GridRow(row_label, cells))
    return render_grid(rows, title=title, subtitle=subtitle, col_headers=list(names) if names else None,
                       style=style, legend=legend)


def sweep_grid(images: Sequence[np.ndarray], maps: Sequence, layer_labels: Sequence[str], *, title: str,
               target_names: Sequence[str], probs: Sequence[float], names: Sequence[str] | None = None,
               labels: Sequence[str | None] | None = None, signed: bool = False,
               style: FigureStyle = FigureStyle(), subtitle: str | None = None,
               legend: Sequence[str] = ()) -> RenderedFigure:
    """Rows = layers, columns = images (the seed-000 layer sweep), under a row of the originals.

    images: N arrays; maps: (N, L, H, W), one map per image and layer, all for the same target of each
    image; target_names / probs: N, captioned under the originals (red when it disagrees with
    ``labels``); layer_labels: L row labels; names: N column headers.
    """
    n = len(images)
    originals = [GridCell(images[i], caption=f"{target_names[i]}\n{format_prob(probs[i])}",
                          caption_alert=bool(labels and labels[i] and labels[i] != target_names[i]))
                 for i in range(n)]
    rows = [GridRow("original", originals)]
    rows += [GridRow(label, [GridCell(images[i], maps[i][j], signed=signed) for i in range(n)])
             for j, label in enumerate(layer_labels)]
    return render_grid(rows, title=title, subtitle=subtitle, col_headers=list(names) if names else None,
                       style=style, legend=legend)


def compare_grid(images: Sequence[np.ndarray], maps: Sequence, method_labels: Sequence[str], *, title: str,
                 target_names: Sequence[str], probs: Sequence[float], names: Sequence[str],
                 signed: Sequence[bool] | None = None, style: FigureStyle = FigureStyle(),
                 subtitle: str | None = None, legend: Sequence[str] = ()) -> RenderedFigure:
    """One row per image: the original, then one overlay per method (and layer), as papers compare methods.

    images: N arrays; maps: (N, M, H, W); method_labels: M column headers ("gradcam\\nfeatures.1.bn");
    target_names / probs: N, the explained class of each row, captioned under every overlay; names: N
    row labels; signed: M flags. With ``normalise="row"`` the maps of one image share one scale.
    """
    rows = []
    for i in range(len(images)):
        cells = [GridCell(images[i])]
        cells += [GridCell(images[i], maps[i][m], f"{target_names[i]}\n{format_prob(probs[i])}",
                           signed=bool(signed and signed[m])) for m in range(len(method_labels))]
        rows.append(GridRow(names[i], cells))
    return render_grid(rows, title=title, subtitle=subtitle, col_headers=["original", *method_labels],
                       style=style, legend=legend)
