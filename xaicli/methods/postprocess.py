"""Post-processing shared by the methods: upsampling and normalisation, as named, documented steps.

Normalisation is per map (per image x target): ``(m - min) / (max - min)``, so every map uses the
full [0, 1] range and a constant map (nothing to show) becomes all zeros rather than NaN.

Flat maps: stretching to the full range would also turn a *nearly* constant map - variations below
:data:`FLAT_RTOL` of its magnitude, float noise on an all-zero CAM - into a confident-looking picture.
The methods' final normalisation (:func:`normalise_map`) therefore returns all zeros for those too;
downstream, an all-constant map is reported as ``flat`` (manifest), drawn neutral and counted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS = 1e-12
FLAT_RTOL = 1e-3
"""A map whose range (max - min) is at most this fraction of its largest magnitude is flat."""


def upsample(maps: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """(B, K, h, w) -> (B, K, H, W); bilinear with ``align_corners=False`` (as cv2.resize and PIL)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if mode == "nearest":
        return F.interpolate(maps, size=size, mode="nearest")
    return F.interpolate(maps, size=size, mode=mode, align_corners=False)


def minmax_normalise(maps: Tensor, flat_rtol: float = 0.0) -> Tensor:
    """Scale each (H, W) map of a (..., H, W) tensor to [0, 1]; constant maps (range at most
    ``flat_rtol`` times the largest magnitude, or 1e-12) become 0."""
    flat = maps.flatten(-2)
    lo = flat.amin(-1, keepdim=True)
    hi = flat.amax(-1, keepdim=True)
    span = hi - lo
    limit = (flat_rtol * torch.maximum(hi.abs(), lo.abs())).clamp_min(_EPS)
    out = torch.where(span > limit, (flat - lo) / span.clamp_min(_EPS), torch.zeros_like(flat))
    return out.view_as(maps)


def maxabs_normalise(maps: Tensor, flat_rtol: float = 0.0) -> Tensor:
    """Scale each signed map to [-1, 1] by its largest magnitude, keeping 0 at 0; all-zero maps (and,
    with ``flat_rtol``, maps whose range is at most that fraction of their magnitude) become 0."""
    flat = maps.flatten(-2)
    scale = flat.abs().amax(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - flat.amin(-1, keepdim=True)
    keep = (scale > _EPS) & (span > flat_rtol * scale)
    out = torch.where(keep, flat / scale.clamp_min(_EPS), torch.zeros_like(flat))
    return out.view_as(maps)


def normalise_map(maps: Tensor, signed: bool = False) -> Tensor:
    """The final normalisation of every method: [0, 1] (or [-1, 1] when ``signed``), flat maps (see the
    module docstring) all zeros."""
    return maxabs_normalise(maps, FLAT_RTOL) if signed else minmax_normalise(maps, FLAT_RTOL)
