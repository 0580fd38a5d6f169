"""What the localisation metrics share: the object mask, and the convention that an empty mask (no
object annotated) leaves the value undefined (NaN), as Quantus does."""

from __future__ import annotations

import torch
from torch import Tensor


def undefined_where_empty(values: Tensor, masks: Tensor) -> Tensor:
    """(B, K) values -> NaN for images whose (B, H, W) mask is empty."""
    empty = masks.flatten(1).sum(1) == 0  # (B,)
    return torch.where(empty[:, None], torch.full_like(values, float("nan")), values)


def mass_share(weights: Tensor, masks: Tensor) -> Tensor:
    """Share of each (B, K, H, W) non-negative map's total inside the (B, H, W) mask -> (B, K); NaN for
    an empty mask or a map with no mass."""
    w = weights.to(torch.float64)
    inside = (w * masks[:, None].to(w.dtype)).flatten(2).sum(-1)
    total = w.flatten(2).sum(-1)
    share = torch.where(total > 0, inside / total, torch.full_like(total, float("nan")))
    return undefined_where_empty(share, masks).float()
