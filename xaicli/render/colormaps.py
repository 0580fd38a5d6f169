"""Colormaps as exact 256-entry lookup tables, stored in the package (no matplotlib or OpenCV needed).

``jet`` is OpenCV's COLORMAP_JET (what pytorch-grad-cam's ``show_cam_on_image`` uses), the others are
matplotlib's tables; :mod:`xaicli.render.colormap_tables` holds them as data, written by
``tools/gen_colormaps.py`` (run it again to regenerate). Signed maps use a diverging map (``coolwarm``
unless ``bwr`` was chosen) with 0 at the centre.

This module is the only place where values become colours: the per-image overlays
(:func:`xaicli.render.overlay.overlay`, batched on the device) and the figure cells and colorbars
(:mod:`xaicli.render.figures`) both call :func:`apply_colormap`, so a value has the same colour
everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported on first use: config validation (COLORMAPS) stays instant
    import torch
    from torch import Tensor

# the names ``output.colormap`` accepts, in the order error messages list them
COLORMAPS: tuple[str, ...] = ("jet", "viridis", "inferno", "magma", "gray", "hot", "coolwarm", "bwr")
DIVERGING: frozenset[str] = frozenset({"coolwarm", "bwr"})
SIGNED_DEFAULT = "coolwarm"
_CACHE: dict[tuple[str, str], Tensor] = {}


def lut(name: str, device: torch.device | str = "cpu") -> Tensor:
    """(256, 3) float32 lookup table on ``device`` (decoded once, cached per device)."""
    key = (name, str(device))
    if key not in _CACHE:
        if name not in COLORMAPS:
            raise KeyError(f"unknown colormap {name!r}; choose from {', '.join(COLORMAPS)}")
        _CACHE[key] = _decode(name).to(device)
    return _CACHE[key]


def _decode(name: str) -> Tensor:
    import base64

    import numpy as np
    import torch

    from xaicli.render.colormap_tables import TABLES

    raw = np.frombuffer(base64.b64decode(TABLES[name]), dtype="<f4").reshape(256, 3)
    return torch.from_numpy(raw.astype(np.float32))  # a native-order, writable copy


def resolve(name: str, signed: bool) -> str:
    """The colormap actually used: a signed map needs 0 in the middle, so a sequential choice such as
    ``jet`` gives way to ``coolwarm`` for signed maps (a diverging choice is kept)."""
    return SIGNED_DEFAULT if signed and name not in DIVERGING else name


def colour_index(values: Tensor, signed: bool = False, dtype: torch.dtype | None = None) -> Tensor:
    """Values in [0, 1] ([-1, 1] when ``signed``; outside is clipped) -> int64 table rows 0..255.

    Signed values are shifted by (v + 1) / 2 first, so 0 lands on row round(127.5) = 128, the middle.
    ``dtype``: the integer type of the rows (default int64, what indexing wants; int32 for index_select).
    """
    v = (values.float() + 1) / 2 if signed else values.float()
    import torch

    return v.clamp(0, 1).mul_(255).round_().to(dtype or torch.int64)  # in place on clamp's copy


def apply_colormap(maps: Tensor, name: str, signed: bool = False) -> Tensor:
    """(..., H, W) maps in [0, 1] (or [-1, 1] when ``signed``) -> (..., H, W, 3) colours in [0, 1].

    ``name`` goes through :func:`resolve`, so signed maps always get a diverging colormap.
    """
    return lut(resolve(name, signed), maps.device)[colour_index(maps, signed)]
