"""Feature ablation on superpixels: the exact leave-one-out baseline of LIME and Kernel SHAP
(Captum ``FeatureAblation`` with the superpixels as its feature mask).

For each superpixel i of an image, one forward pass with i filled (see :mod:`._base`) and every other
superpixel kept; its value is the drop of the target's score,

    A_i = s(x) - s(x with superpixel i filled),

painted on its pixels. No sampling and no randomness: M forward passes per image (M superpixels,
about ``n_segments``), whatever the number of targets. Signed: removing a superpixel can raise the
score.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xaicli.methods.perturbation._superpixels import SUPERPIXEL_OPTIONS, SuperpixelMethod
from xaicli.methods.registry import register


@register
class FeatureAblation(SuperpixelMethod):
    name = "feature_ablation"
    summary = "Feature ablation: the drop of the target score when one superpixel at a time is filled."
    paper = ("Leave-one-out ablation (Zeiler & Fergus 2014; Captum FeatureAblation), on SLIC superpixels "
             "(Achanta et al., TPAMI 2012)")
    options = SUPERPIXEL_OPTIONS

    def coalitions(self, m: int) -> Tensor:
        """Row i keeps every superpixel but i: ``1 - I`` (m, m)."""
        return 1 - torch.eye(m)

    def fit(self, z: Tensor, counts: Tensor, y: Tensor, clean: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return (1 - z).T @ (clean[None] - y), {}  # row r fills exactly the superpixel where z[r] is 0
