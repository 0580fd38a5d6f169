"""Functions of the model's input space shared by the method families: the valid input range and a
blurred copy of the input (references for integrated gradients, fill values for perturbations).

The engine hands methods the *normalised* input; ``input_range`` (see
:data:`~xaicli.methods.base.InputRange`) says where raw pixel values 0 and 1 land per channel, so
"black", "mid grey" or "the display image" can be expressed in that space.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from xaicli.methods.base import InputRange


def input_bounds(x: Tensor, input_range: InputRange | None) -> tuple[Tensor, Tensor]:
    """Lowest and highest valid input value per channel, broadcastable to ``x`` (B, C, H, W).

    From ``input_range`` when known ((1, C, 1, 1) each), otherwise each image's own
    per-channel minimum and maximum ((B, C, 1, 1) each).
    """
    if input_range is not None:
        lo, hi = (t.to(device=x.device, dtype=x.dtype).view(1, -1, 1, 1) for t in input_range)
        return lo, hi
    return x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)


def display_images(x: Tensor, input_range: InputRange | None) -> Tensor:
    """The display images (B, C, H, W) in [0, 1] behind normalised inputs ``x``: ``(x - lo) / (hi - lo)``
    per channel (each image's own min..max when ``input_range`` is unknown)."""
    lo, hi = input_bounds(x, input_range)
    return ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding; radius ceil(3 sigma), capped by size."""
    if sigma <= 0:
        return x
    radius = min(math.ceil(3 * sigma), x.shape[-2] - 1, x.shape[-1] - 1)
    if radius < 1:
        return x
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()  # (2r+1,)
    c = x.shape[1]
    out = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # along W
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along H
