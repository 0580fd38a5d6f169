"""Shared machinery of the gradient CAM methods.

One forward pass records the target layers' activations ``A`` (B, C, h, w) as autograd leaves; then,
for each target rank k, one backward pass from the chosen logits ``y^c`` down to those layers only gives
``dy^c/dA``. A subclass supplies :meth:`GradientCAM.channel_weights` (the ``alpha^c_k`` of the papers);
the map is ``ReLU(sign * sum_k alpha^c_k A^k)`` upsampled bilinearly to the input size and min-max
normalised per map (see :mod:`xaicli.methods.postprocess`).

Summing the chosen logits over the batch before the backward pass is exact: image ``b``'s logit
depends only on image ``b``'s activations (eval mode, no batch statistics), so each image receives
its own gradient, and one backward per rank serves the whole batch.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from xaicli.methods.base import Explanation, Method, Option, TargetSpec, resolve_targets
from xaicli.methods.hooks import capture_activations, inference_state
from xaicli.methods.postprocess import minmax_normalise, upsample

CAM_OPTIONS: dict[str, Option] = {
    "upsample": Option("bilinear", "how the layer-resolution map is resized to the input",
                       choices=("bilinear", "bicubic", "nearest")),
    "normalise": Option(True, "min-max normalise each map to [0, 1] (false: raw ReLU'd values)"),
}


class GradientCAM(Method):
    """Base of Grad-CAM-like methods: weights from gradients at the target layer."""

    family = "cam"
    requires_layer = True
    options = CAM_OPTIONS
    sign: ClassVar[float] = 1.0  # -1 for the counterfactual ("negative") variant

    def channel_weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        """(B, C, h, w) activations and gradients -> (B, C) channel weights."""
        raise NotImplementedError

    def explain(self, x: Tensor, targets: TargetSpec) -> Explanation:
        size = (x.shape[-2], x.shape[-1])
        with inference_state(self.model), capture_activations(self.model, self.layers) as acts:
            with torch.enable_grad():  # also when called from inside torch.no_grad()
                logits = self.model(x)  # (B, N)
                tgt = resolve_targets(logits, targets)  # (B, K)
                leaves = [acts[name] for name in self.layers]
                per_layer: list[list[Tensor]] = [[] for _ in self.layers]
                for k in range(tgt.shape[1]):
                    score = logits.gather(1, tgt[:, k : k + 1]).sum()
                    grads = torch.autograd.grad(score, leaves, retain_graph=k < tgt.shape[1] - 1)
                    for i, (a, g) in enumerate(zip(leaves, grads, strict=True)):
                        per_layer[i].append(self.combine(a, g))
        maps = {name: self.finish(torch.stack(cams, dim=1), size)
                for name, cams in zip(self.layers, per_layer, strict=True)}
        return Explanation(maps=maps, targets=tgt, logits=logits.detach())

    def combine(self, acts: Tensor, grads: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, h, w): ReLU(sign * sum_k w_k A^k), computed in float32."""
        a, g = acts.detach().float(), grads.float()
        weights = self.channel_weights(a, g)  # (B, C)
        cam = torch.einsum("bc,bchw->bhw", weights, a)
        return torch.relu(self.sign * cam)

    def finish(self, cams: Tensor, size: tuple[int, int]) -> Tensor:
        """(B, K, h, w) -> (B, K, H, W) at input size, normalised as configured."""
        out = upsample(cams, size, self.opts["upsample"])
        if self.opts["upsample"] == "bicubic":
            out = out.clamp_min(0)  # bicubic overshoots below zero
        return minmax_normalise(out) if self.opts["normalise"] else out
