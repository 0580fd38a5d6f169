"""Colormaps as 256-entry lookup tables, built from a few control points (no matplotlib needed).

``jet`` follows the classic piecewise-linear definition (the look of OpenCV's COLORMAP_JET used by
pytorch-grad-cam); the perceptual maps are sampled from matplotlib's published tables at 9 points and
linearly interpolated, which is visually indistinguishable at overlay scale. Signed maps use a
diverging map (``coolwarm`` by default) with 0 at the centre.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported on first use: config validation (COLORMAPS) stays instant
    import torch
    from torch import Tensor

_POINTS: dict[str, list[tuple[float, float, float]]] = {
    "jet": [(0, 0, 0.5), (0, 0, 1), (0, 0.5, 1), (0, 1, 1), (0.5, 1, 0.5), (1, 1, 0), (1, 0.5, 0),
            (1, 0, 0), (0.5, 0, 0)],
    "viridis": [(0.267, 0.005, 0.329), (0.283, 0.141, 0.458), (0.254, 0.265, 0.530), (0.207, 0.372, 0.553),
                (0.164, 0.471, 0.558), (0.128, 0.567, 0.551), (0.135, 0.659, 0.518), (0.267, 0.749, 0.441),
                (0.478, 0.821, 0.318), (0.741, 0.873, 0.150), (0.993, 0.906, 0.144)],
    "inferno": [(0.001, 0.000, 0.014), (0.122, 0.047, 0.283), (0.334, 0.060, 0.429), (0.533, 0.134, 0.416),
                (0.729, 0.212, 0.333), (0.891, 0.347, 0.194), (0.976, 0.552, 0.039), (0.969, 0.789, 0.197),
                (0.988, 0.998, 0.645)],
    "magma": [(0.001, 0.000, 0.014), (0.113, 0.065, 0.277), (0.317, 0.071, 0.485), (0.513, 0.148, 0.508),
              (0.716, 0.215, 0.475), (0.904, 0.314, 0.392), (0.987, 0.536, 0.382), (0.996, 0.765, 0.544),
              (0.987, 0.991, 0.750)],
    "gray": [(0, 0, 0), (1, 1, 1)],
    "hot": [(0, 0, 0), (0.5, 0, 0), (1, 0, 0), (1, 0.5, 0), (1, 1, 0), (1, 1, 0.5), (1, 1, 1)],
    "coolwarm": [(0.230, 0.299, 0.754), (0.436, 0.571, 0.952), (0.667, 0.779, 0.993), (0.865, 0.865, 0.865),
                 (0.968, 0.721, 0.612), (0.906, 0.455, 0.355), (0.706, 0.016, 0.150)],
    "bwr": [(0, 0, 1), (1, 1, 1), (1, 0, 0)],
}

COLORMAPS: tuple[str, ...] = tuple(_POINTS)
DIVERGING: frozenset[str] = frozenset({"coolwarm", "bwr"})
_CACHE: dict[tuple[str, str], Tensor] = {}


def lut(name: str, device: torch.device | str = "cpu") -> Tensor:
    """(256, 3) float32 lookup table on ``device`` (cached per device)."""
    import torch

    key = (name, str(device))
    if key not in _CACHE:
        pts = torch.tensor(_POINTS[name], dtype=torch.float32)  # (P, 3)
        pos = torch.linspace(0, len(pts) - 1, 256)
        lo = pos.floor().long().clamp(max=len(pts) - 2)
        frac = (pos - lo)[:, None]
        _CACHE[key] = (pts[lo] * (1 - frac) + pts[lo + 1] * frac).to(device)
    return _CACHE[key]


def apply_colormap(maps: Tensor, name: str, signed: bool = False) -> Tensor:
    """(..., H, W) maps in [0, 1] (or [-1, 1] when ``signed``) -> (..., H, W, 3) colours in [0, 1]."""
    values = (maps.float() + 1) / 2 if signed else maps.float()
    idx = (values.clamp(0, 1) * 255).round().long()
    return lut(name, maps.device)[idx]
