"""Heatmap overlays, computed batched on the device; only uint8 pixels leave it.

:func:`blend` is also how figure cells are drawn (:mod:`xaicli.render.figures` calls it on CPU
tensors), so an overlay file and the same map in a figure have identical pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xaicli.render.colormaps import colour_index, lut, resolve


def to_rgb(images: Tensor) -> Tensor:
    """(B, C, H, W) display images in [0, 1], C = 1 or 3 -> (B, H, W, 3)."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images.permute(0, 2, 3, 1)


def to_uint8(colours: Tensor) -> Tensor:
    """Float colours in [0, 1] (outside is clipped) -> uint8, rounded half to even."""
    return (colours.clamp(0, 1) * 255).round().to(torch.uint8)


def blend(base: Tensor, heat: Tensor, alpha: float) -> Tensor:
    """``(1 - alpha) * base + alpha * heat`` (float (..., 3) in [0, 1], broadcast) -> uint8 pixels."""
    return to_uint8((1 - alpha) * base + alpha * heat)


NEUTRAL = 0.5
"""The colour (mid grey) that a flat map is drawn in: no colour means nothing to show."""


def overlay(images: Tensor, maps: Tensor, colormap: str = "jet", alpha: float = 0.5, signed: bool = False,
            scale: int = 1, flat: Tensor | None = None, segments: Tensor | None = None) -> Tensor:
    """Blend heatmaps over images: ``(1 - alpha) * image + alpha * colour(map)``.

    images: (B, C, H, W) in [0, 1]; maps: (B, K, H, W) in [0, 1] ([-1, 1] if ``signed``, which then uses
    a diverging colormap unless one was chosen). Returns uint8 (B, K, H*scale, W*scale, 3); ``scale``
    enlarges small inputs with nearest-neighbour so pixels stay visible. ``flat`` (B, K) bool: maps
    drawn neutral (:data:`NEUTRAL` grey instead of a colour: the lowest colour of the map would claim
    "nothing important here", which a flat map does not know either). ``segments`` (B, H, W) integer
    superpixel labels: their boundaries are drawn over every target's overlay (:func:`mark_boundaries`).

    The same pixels as ``blend(to_rgb(images), heat, alpha)`` with ``heat`` = ``apply_colormap(maps)``
    (grey where ``flat``) - the figures' path - in fewer passes: ``alpha * colour`` is looked up in a
    pre-multiplied table (the same float products), and the sum, clipping and rounding happen in place.
    """
    if scale > 1:
        images = F.interpolate(images.float(), scale_factor=scale, mode="nearest")
        maps = F.interpolate(maps.float(), scale_factor=scale, mode="nearest")
    table = alpha * lut(resolve(colormap, signed), maps.device)  # (256, 3): alpha * colour
    rows = colour_index(maps, signed, torch.int32)  # (B, K, H, W)
    out = table.index_select(0, rows.flatten()).view(*rows.shape, 3)  # (B, K, H, W, 3)
    if flat is not None:
        neutral = alpha * torch.full((3,), NEUTRAL, device=out.device)  # alpha * grey, as blend computes it
        out = torch.where(flat.to(out.device)[:, :, None, None, None], neutral, out)
    out += (1 - alpha) * to_rgb(images.float())[:, None]  # + (1 - alpha) * image, (B, 1, H, W, 3)
    pixels = out.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return pixels if segments is None else mark_boundaries(pixels, segments, scale)


BOUNDARY_COLOUR = (255, 255, 0)
"""Superpixel boundaries are drawn in yellow, as scikit-image's ``mark_boundaries``."""


def boundaries(segments: Tensor, scale: int = 1) -> Tensor:
    """(B, H, W) labels -> (B, H*scale, W*scale) bool: pixels whose right or lower neighbour (at the
    enlarged size) belongs to another superpixel, so each boundary is one pixel wide."""
    labels = segments[:, None].float()
    if scale > 1:
        labels = F.interpolate(labels, scale_factor=scale, mode="nearest")
    labels = labels[:, 0]
    edge = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    edge[:, :, :-1] |= labels[:, :, :-1] != labels[:, :, 1:]
    edge[:, :-1, :] |= labels[:, :-1, :] != labels[:, 1:, :]
    return edge


def mark_boundaries(pixels: Tensor, segments: Tensor, scale: int = 1) -> Tensor:
    """Paint the boundaries of ``segments`` (B, H, W) in :data:`BOUNDARY_COLOUR` on uint8 overlays
    (B, K, H*scale, W*scale, 3)."""
    edge = boundaries(segments.to(pixels.device), scale)[:, None, :, :, None]  # (B, 1, H', W', 1)
    colour = torch.tensor(BOUNDARY_COLOUR, dtype=torch.uint8, device=pixels.device)
    return torch.where(edge, colour, pixels)
