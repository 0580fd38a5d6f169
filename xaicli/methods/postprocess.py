"""Post-processing shared by the methods: upsampling and normalisation, as named, documented steps.

Normalisation is per map (per image x target): ``(m - min) / (max - min)``, so every map uses the
full [0, 1] range and a constant map (nothing to show) becomes all zeros rather than NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS = 1e-12


def upsample(maps: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """(B, K, h, w) -> (B, K, H, W); bilinear with ``align_corners=False`` (as cv2.resize and PIL)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if mode == "nearest":
        return F.interpolate(maps, size=size, mode="nearest")
    return F.interpolate(maps, size=size, mode=mode, align_corners=False)


def minmax_normalise(maps: Tensor) -> Tensor:
    """Scale each (H, W) map of a (..., H, W) tensor to [0, 1]; constant maps become 0."""
    flat = maps.flatten(-2)
    lo = flat.amin(-1, keepdim=True)
    hi = flat.amax(-1, keepdim=True)
    span = hi - lo
    out = torch.where(span > _EPS, (flat - lo) / span.clamp_min(_EPS), torch.zeros_like(flat))
    return out.view_as(maps)


def maxabs_normalise(maps: Tensor) -> Tensor:
    """Scale each signed map to [-1, 1] by its largest magnitude, keeping 0 at 0."""
    flat = maps.flatten(-2)
    scale = flat.abs().amax(-1, keepdim=True)
    out = torch.where(scale > _EPS, flat / scale.clamp_min(_EPS), torch.zeros_like(flat))
    return out.view_as(maps)
