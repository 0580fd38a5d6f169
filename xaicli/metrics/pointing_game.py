"""Pointing game (Zhang et al., Top-down Neural Attention by Excitation Backprop, ECCV 2016 / IJCV
2018, arXiv:1608.00507, sec. 5.1).

A hit (1) when the map's maximum lies on the object, else a miss (0); averaged over images it is the
pointing accuracy. As in the paper, the object may be missed by a few pixels: the mask is dilated by
``tolerance`` pixels (15 at 224 x 224 in the paper, scaled here with the input size:
``round(tolerance * min(H, W) / reference_size)``; Euclidean disk). Several pixels sharing the maximum
count as a hit when any of them is on the object (Quantus' ``PointingGame``, which has no tolerance:
``tolerance: 0`` reproduces it). NaN for an image without an object.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xaicli.methods import Option
from xaicli.metrics._localisation import undefined_where_empty
from xaicli.metrics.base import Metric, MetricInput, MetricResult
from xaicli.metrics.registry import register


def dilate(masks: Tensor, radius: int) -> Tensor:
    """(B, H, W) bool masks grown by a disk of ``radius`` pixels (a pixel joins when within that
    Euclidean distance of a mask pixel)."""
    if radius <= 0:
        return masks
    r = torch.arange(-radius, radius + 1, device=masks.device, dtype=torch.float32)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()[None, None]
    grown = F.conv2d(masks[:, None].float(), disk, padding=radius)
    return grown[:, 0] > 0.5


def scaled_tolerance(tolerance: float, reference: int, height: int, width: int) -> int:
    return int(round(tolerance * min(height, width) / reference))


@register
class PointingGame(Metric):
    name = "pointing_game"
    summary = "Pointing game: 1 when the map's maximum lies on the object (within a tolerance), else 0."
    paper = "Zhang et al., Top-down Neural Attention by Excitation Backprop, ECCV 2016 (arXiv:1608.00507)"
    family = "localisation"
    needs_masks = True
    options = {
        "tolerance": Option(15.0, "pixels the maximum may miss the object by, at reference_size",
                            minimum=0.0),
        "reference_size": Option(224, "input size the tolerance is given for (scaled to the model's)",
                                 minimum=1),
    }

    def compute(self, inp: MetricInput) -> MetricResult:
        h, w = inp.maps.shape[-2:]
        masks = inp.masks.to(inp.maps.device).bool()
        radius = scaled_tolerance(self.opts["tolerance"], self.opts["reference_size"], h, w)
        grown = dilate(masks, radius)[:, None]  # (B, 1, H, W)
        flat = inp.maps.flatten(2)
        at_max = (flat == flat.amax(-1, keepdim=True)).view_as(inp.maps)  # (B, K, H, W)
        hit = (at_max & grown).flatten(2).any(-1).float()
        return MetricResult(undefined_where_empty(hit, masks), {"tolerance_px": torch.full_like(hit, radius)})
