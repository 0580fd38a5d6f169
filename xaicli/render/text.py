"""Text for figures, drawn with Pillow and readable whatever the input size.

Font sizes are given in pixels of the finished figure (they follow ``figures.cell_size``, never the
input resolution). A TrueType font is used when one is found: DejaVu Sans or Liberation Sans from the
system, else Pillow's own scalable default font (``ImageFont.load_default(size=...)``, Pillow >= 10.1
with FreeType); only without FreeType does it fall back to the fixed-size bitmap font.
"""

from __future__ import annotations

import re
from functools import lru_cache

from PIL import ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

_CANDIDATES = {
    False: ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "Arial.ttf", "Helvetica.ttc"),
    True: ("DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf", "Arial Bold.ttf", "Helvetica.ttc"),
}
_BREAKS = re.compile(r"(?<=[\s_./-])")
_DIRS = ("", "/usr/share/fonts/truetype/dejavu/", "/usr/share/fonts/truetype/liberation/",
         "/usr/share/fonts/TTF/", "/Library/Fonts/", "C:/Windows/Fonts/")


@lru_cache(maxsize=64)
def get_font(size: int, bold: bool = False) -> Font:
    """A font ``size`` pixels high (TrueType when available; see the module docstring)."""
    size = max(6, int(size))
    for name in _CANDIDATES[bold]:
        for folder in _DIRS:
            try:
                return ImageFont.truetype(folder + name, size)
            except OSError:
                continue
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: fixed bitmap font
        return ImageFont.load_default()


def text_width(text: str, font: Font) -> int:
    if not text:
        return 0
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def line_height(font: Font) -> int:
    """Height of one line including ascenders and descenders ("Ag")."""
    _, top, _, bottom = font.getbbox("Ág")
    return int(bottom - min(top, 0)) + 1


def fit_text(text: str, font: Font, max_width: int) -> str:
    """``text`` shortened with an ellipsis so that it fits in ``max_width`` pixels."""
    if text_width(text, font) <= max_width:
        return text
    while text and text_width(text + "…", font) > max_width:
        text = text[:-1]
    return text + "…" if text else ""


def wrap_text(text: str, font: Font, max_width: int, max_lines: int = 3) -> list[str]:
    """Greedy wrap into at most ``max_lines`` lines (the last one ellipsised if needed).

    Lines break after spaces and also after ``_ . / -``, so identifiers such as
    ``integrated_gradients`` or ``features.1.bn`` wrap too.
    """
    tokens = [t for t in _BREAKS.split(text) if t]
    lines: list[str] = []
    current = ""
    for i, token in enumerate(tokens):
        trial = current + token
        if text_width(trial.rstrip(), font) <= max_width or not current:
            current = trial
            continue
        lines.append(current.rstrip())
        current = token.lstrip()
        if len(lines) == max_lines - 1:
            current = "".join(tokens[i:]).strip()
            break
    if current.strip():
        lines.append(current.strip())
    return [fit_text(line, font, max_width) for line in lines[:max_lines]]


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: Font,
              fill: tuple[int, int, int] = (0, 0, 0), anchor: str = "la") -> None:
    """Draw one line; ``anchor`` as in Pillow ("la" left-top, "ma" centre-top, "rm" right-middle...)."""
    if not isinstance(font, ImageFont.FreeTypeFont):
        anchor = "la"  # bitmap fonts support no anchors; callers' positions stay close enough
    draw.text(xy, text, font=font, fill=fill, anchor=anchor)


def draw_lines(draw: ImageDraw.ImageDraw, x: float, y: float, lines: list[str], font: Font,
               fill: tuple[int, int, int] = (0, 0, 0), anchor: str = "la") -> float:
    """Draw lines downwards from ``y``; returns the y below the last line."""
    h = line_height(font)
    for line in lines:
        draw_text(draw, (x, y), line, font, fill, anchor)
        y += h
    return y

