"""Shared machinery of the CAM family: maps built from a hooked layer's feature maps.

:class:`CAMMethod` is what every CAM shares: it explains a layer (``needs_layer``), takes the
``upsample`` and ``normalise`` options, and finishes a layer-resolution map the same way (upsampled to the
input size, then min-max normalised per map; see :mod:`xaicli.methods.postprocess`). How the channels
are weighted is each subclass's business:

* :class:`GradientCAM` (Grad-CAM, Grad-CAM++, counterfactual Grad-CAM): weights from the gradients at the
  layer. One forward pass records the target layers' activations ``A`` (B, C, h, w) as autograd leaves;
  then, for each target rank k, one backward pass from the chosen logits ``y^c`` down to those layers
  only gives ``dy^c/dA``; the subclass turns them into channel weights (:meth:`GradientCAM.
  channel_weights`, the ``alpha^c_k`` of the papers) and the map is ``ReLU(sign * sum_k alpha^c_k A^k)``.
  XGrad-CAM supplies channel weights too; methods that weight every position as well as every channel
  (LayerCAM, HiResCAM) override :meth:`GradientCAM.weighted_sum` instead, the one step that combines
  weights and activations.
  Summing the chosen logits over the batch before the backward pass is exact: image ``b``'s logit depends
  only on image ``b``'s activations (eval mode, no batch statistics), so each image receives its own
  gradient, and one backward per rank serves the whole batch.
* :class:`~xaicli.methods.cam.scorecam.ScoreCAM`: weights from forward passes of masked inputs, no
  gradient at all (so it is a sibling of :class:`GradientCAM`, not a child).
* FullGrad (:mod:`.fullgrad`) reads every bias layer rather than one and so takes no ``layers``.
* :class:`ForwardCAM` (Eigen-CAM, Ablation-CAM): gradient-free methods that need the clean forward
  pass's activations and logits, then compute each layer's maps their own way (:meth:`ForwardCAM.
  layer_cam`).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from xaicli.methods.base import Call, Explanation, Method, Option, TargetSpec, resolve_targets
from xaicli.methods.hooks import capture_activations, inference_state
from xaicli.methods.postprocess import normalise_map, upsample

CAM_OPTIONS: dict[str, Option] = {
    "upsample": Option("bilinear", "how the layer-resolution map is resized to the input",
                       choices=("bilinear", "bicubic", "nearest")),
    "normalise": Option(True, "min-max normalise each map to [0, 1] (false: raw ReLU'd values)"),
}


class CAMMethod(Method):
    """Base of the CAM family: a map per hooked layer, finished by :meth:`finish`."""

    family = "cam"
    needs_layer = True
    options = CAM_OPTIONS

    def finish(self, cams: Tensor, size: tuple[int, int]) -> Tensor:
        """(B, K, h, w) -> (B, K, H, W) at input size, normalised as configured."""
        out = upsample(cams, size, self.opts["upsample"])
        if self.opts["upsample"] == "bicubic":
            out = out.clamp_min(0)  # bicubic overshoots below zero
        return normalise_map(out) if self.opts["normalise"] else out


class GradientCAM(CAMMethod):
    """Base of Grad-CAM-like methods: weights from gradients at the target layer."""

    sign: ClassVar[float] = 1.0  # -1 for the counterfactual ("negative") variant

    def channel_weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        """(B, C, h, w) activations and gradients -> (B, C) channel weights (what most subclasses supply)."""
        raise NotImplementedError(f"{type(self).__name__} must define channel_weights or weighted_sum")

    def weighted_sum(self, acts: Tensor, grads: Tensor) -> Tensor:
        """(B, C, h, w) float32 activations and gradients -> (B, h, w) ``sum_k w^c_k A^k``, before the ReLU.

        The override point for methods whose weights vary over positions, ``sum_k W^c_k (.) A^k`` with
        (B, C, h, w) weights ``W`` (LayerCAM, HiResCAM); channel-weighting methods supply
        :meth:`channel_weights` and keep this default.
        """
        return torch.einsum("bc,bchw->bhw", self.channel_weights(acts, grads), acts)

    def compute(self, x: Tensor, targets: TargetSpec, call: Call) -> Explanation:
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
        return torch.relu(self.sign * self.weighted_sum(a, g))


class ForwardCAM(CAMMethod):
    """Base of gradient-free CAMs built from the clean forward pass (Eigen-CAM, Ablation-CAM).

    One forward pass (no autograd) records each target layer's activations and the logits that fix the
    targets; the hooks are gone before :meth:`layer_cam` runs, so a subclass may run further forward
    passes of its own.
    """

    uses_gradients = False

    @abstractmethod
    def layer_cam(self, x: Tensor, layer: str, acts: Tensor, logits: Tensor, tgt: Tensor,
                  call: Call) -> Tensor:
        """(B, C, h, w) activations of ``layer`` -> (B, K, h, w) un-normalised maps for targets ``tgt``."""

    @torch.no_grad()
    def compute(self, x: Tensor, targets: TargetSpec, call: Call) -> Explanation:
        size = (x.shape[-2], x.shape[-1])
        with inference_state(self.model):
            with capture_activations(self.model, self.layers, differentiable=False) as acts:
                logits = self.model(x)  # (B, N)
            tgt = resolve_targets(logits, targets)  # (B, K)
            maps = {name: self.finish(self.layer_cam(x, name, acts[name].float(), logits, tgt, call), size)
                    for name in self.layers}
        return Explanation(maps=maps, targets=tgt, logits=logits)
