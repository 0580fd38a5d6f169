"""Line charts and tables drawn with Pillow, for the figures of ``xaicli evaluate``.

Pure functions of numbers and labels that return a :class:`~xaicli.render.figures.RenderedFigure`-like
:class:`Chart` (the PIL image plus what was written on it, so tests can check text and geometry);
nothing here writes files. The layouts are deliberately plain: axes with ticks, one colour per series,
a legend that carries each series' summary (e.g. the area under a deletion curve).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from xaicli.render import text as T

WHITE = (255, 255, 255)
INK = (25, 25, 25)
MUTED = (110, 110, 110)
GRID = (225, 225, 225)
ALERT = (200, 30, 30)
GOOD = (20, 120, 50)

#: Series colours (Tableau 10): distinguishable, and readable on white.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


@dataclass
class Series:
    """One line: y values at x = 0..len-1 (scaled to the panel's x range), a legend label."""

    label: str
    ys: Sequence[float]
    xs: Sequence[float] | None = None  # default: evenly spaced over the panel's x range


@dataclass
class Panel:
    title: str
    series: list[Series]
    xlabel: str = ""
    ylabel: str = ""
    x_range: tuple[float, float] = (0.0, 1.0)
    y_range: tuple[float, float] | None = None  # default: from the data, including 0 and 1 for [0, 1] data
    x_ticks: Sequence[tuple[float, str]] | None = None  # (x, label); default: 5 evenly spaced numbers


@dataclass
class Chart:
    image: Image.Image
    title: str
    panels: list[str]
    legends: list[list[str]]
    plot_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # x0, y0, x1, y1 per panel

    def png_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.image.save(buf, format="PNG", compress_level=6)
        return buf.getvalue()


def _y_range(panel: Panel) -> tuple[float, float]:
    if panel.y_range is not None:
        return panel.y_range
    values = [float(v) for s in panel.series for v in s.ys if v == v]  # NaN-free
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if lo >= 0 and hi <= 1:
        return 0.0, 1.0
    pad = 0.05 * ((hi - lo) or 1.0)
    return lo - pad, hi + pad


def _fmt(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:.0f}"


def line_chart(panels: Sequence[Panel], *, title: str, subtitle: str | None = None, font_size: int = 14,
               plot_size: tuple[int, int] = (420, 300)) -> Chart:
    """Panels side by side, each an x-y plot with a legend under it (one line per series)."""
    font, bold = T.get_font(font_size), T.get_font(font_size, bold=True)
    title_font = T.get_font(font_size + 4, bold=True)
    lh, pad = T.line_height(font), max(8, font_size // 2)
    pw, ph = plot_size
    left_axis = T.text_width("-0.00", font) + lh + pad  # tick labels and the rotated-free y label line
    legends = [[s.label for s in p.series] for p in panels]
    legend_lines = max((len(lg) for lg in legends), default=0)
    width = pad + len(panels) * (left_axis + pw + 2 * pad)
    sub_lines = T.wrap_text(subtitle, font, width - 2 * pad, 5) if subtitle else []
    top = pad + T.line_height(title_font) + len(sub_lines) * lh + pad
    height = top + lh + ph + 2 * lh + pad + legend_lines * lh + pad
    img = Image.new("RGB", (max(width, T.text_width(title, title_font) + 2 * pad), height), WHITE)
    draw = ImageDraw.Draw(img)
    T.draw_text(draw, (pad, pad), title, title_font, INK)
    T.draw_lines(draw, pad, pad + T.line_height(title_font), sub_lines, font, MUTED)
    boxes = []
    for i, panel in enumerate(panels):
        x0 = pad + i * (left_axis + pw + 2 * pad) + left_axis
        y0 = top + lh
        box = (x0, y0, x0 + pw, y0 + ph)
        boxes.append(box)
        _draw_panel(draw, panel, box, font, bold, lh)
    return Chart(img, title, [p.title for p in panels], legends, boxes)


def _draw_panel(draw: ImageDraw.ImageDraw, panel: Panel, box: tuple[int, int, int, int], font, bold,
                lh: int) -> None:
    x0, y0, x1, y1 = box
    (xa, xb), (ya, yb) = panel.x_range, _y_range(panel)

    def px(x: float) -> float:
        return x0 + (x - xa) / ((xb - xa) or 1.0) * (x1 - x0)

    def py(y: float) -> float:
        return y1 - (y - ya) / ((yb - ya) or 1.0) * (y1 - y0)

    T.draw_text(draw, ((x0 + x1) / 2, y0 - lh), panel.title, bold, INK, anchor="ma")
    for k in range(5):  # horizontal grid and y ticks
        y = ya + k * (yb - ya) / 4
        draw.line((x0, py(y), x1, py(y)), fill=GRID)
        T.draw_text(draw, (x0 - 4, py(y)), _fmt(y), font, MUTED, anchor="rm")
    ticks = panel.x_ticks or [(xa + k * (xb - xa) / 4, _fmt(xa + k * (xb - xa) / 4)) for k in range(5)]
    for x, label in ticks:
        draw.line((px(x), y1, px(x), y1 + 4), fill=MUTED)
        T.draw_text(draw, (px(x), y1 + 5), label, font, MUTED, anchor="ma")
    draw.rectangle((x0, y0, x1, y1), outline=MUTED)
    if panel.xlabel:
        T.draw_text(draw, ((x0 + x1) / 2, y1 + 5 + lh), panel.xlabel, font, INK, anchor="ma")
    if panel.ylabel:
        T.draw_text(draw, (x0 + 4, y0 + 4), panel.ylabel, font, MUTED)
    for j, s in enumerate(panel.series):
        colour = PALETTE[j % len(PALETTE)]
        n = len(s.ys)
        xs = list(s.xs) if s.xs is not None else [xa + (xb - xa) * t / max(n - 1, 1) for t in range(n)]
        points = [(px(x), py(float(y))) for x, y in zip(xs, s.ys, strict=True) if y == y]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for p in points if n <= 60 else ():
            draw.ellipse((p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2), fill=colour)
        ly = y1 + 5 + 2 * lh + j * lh
        draw.line((x0, ly + lh / 2, x0 + 18, ly + lh / 2), fill=colour, width=3)
        T.draw_text(draw, (x0 + 24, ly), T.fit_text(s.label, font, x1 - x0 - 24), font, INK)


@dataclass
class TableCell:
    text: str
    alert: bool = False  # drawn in red (a failed gate)
    good: bool = False  # drawn in green (the best of its column)


def table_image(header: Sequence[str], rows: Sequence[Sequence[TableCell]], *, title: str,
                subtitle: str | None = None, notes: Sequence[str] = (), font_size: int = 14) -> Chart:
    """A plain table: a bold header row, left-aligned cells, thin rules, notes under it."""
    font, bold = T.get_font(font_size), T.get_font(font_size, bold=True)
    title_font = T.get_font(font_size + 4, bold=True)
    lh, pad = T.line_height(font), max(8, font_size // 2)
    cols = len(header)
    widths = [max([T.text_width(header[c], bold)] + [T.text_width(r[c].text, font) for r in rows]) + 2 * pad
              for c in range(cols)]
    width = max(sum(widths) + 2 * pad, T.text_width(title, title_font) + 2 * pad, 360)
    sub_lines = T.wrap_text(subtitle, font, width - 2 * pad, 3) if subtitle else []
    note_lines = [ln for n in notes for ln in T.wrap_text(n, font, width - 2 * pad, 4)]
    row_h = lh + pad
    top = pad + T.line_height(title_font) + len(sub_lines) * lh + pad
    height = top + row_h * (len(rows) + 1) + pad + len(note_lines) * lh + pad
    img = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(img)
    T.draw_text(draw, (pad, pad), title, title_font, INK)
    T.draw_lines(draw, pad, pad + T.line_height(title_font), sub_lines, font, MUTED)
    x = pad
    for c in range(cols):
        T.draw_text(draw, (x + pad, top + pad / 2), header[c], bold, INK)
        x += widths[c]
    draw.line((pad, top + row_h, width - pad, top + row_h), fill=INK)
    for r, row in enumerate(rows):
        y = top + row_h * (r + 1)
        x = pad
        for c, cell in enumerate(row):
            colour = ALERT if cell.alert else GOOD if cell.good else INK
            T.draw_text(draw, (x + pad, y + pad / 2), cell.text, font, colour)
            x += widths[c]
        draw.line((pad, y + row_h, width - pad, y + row_h), fill=GRID)
    T.draw_lines(draw, pad, top + row_h * (len(rows) + 1) + pad, note_lines, font, MUTED)
    return Chart(img, title, [], [[h for h in header]])
