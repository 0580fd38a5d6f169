"""Gradient-weighted attention rollout, as in jacobgil/vit-explain (``vit_grad_rollout.py``).

Rollout (:mod:`.attention_rollout`) of class-specific attention: each block's heads are fused as the
mean of attention times its gradient, negative values are zeroed, the lowest ``discard_ratio`` entries
dropped, and the result rolled out with the residual identity::

    Ā^l = ReLU(E_h[A^l ⊙ ∇A^l]);  Â^l = (Ā^l + I) / 2, rows renormalised;  R = Â^L ... Â^1

It differs from :mod:`.transformer_attribution` (Chefer et al.) in where the ReLU sits (after the head
average, not before), in the residual handling (the rollout average instead of ``R + Ā R``) and in the
discarding; it is the variant many ViT tutorials use. As in vit-explain no entry is protected from
discarding. Rows are renormalised as in rollout (see the note there on vit-explain's broadcasting).
"""

from __future__ import annotations

import torch
from torch import Tensor

from xaicli.methods.base import Option
from xaicli.methods.registry import register
from xaicli.methods.transformer._base import (
    ATTENTION_OPTIONS,
    AttentionMethod,
    Forward,
    chosen_logit_gradients,
    class_row,
)


def grad_rollout(attentions: list[Tensor], gradients: list[Tensor], discard_ratio: float) -> Tensor:
    """Per block (B, heads, T, T) attention and gradient -> (B, T, T) rolled-out relevance."""
    first = attentions[0]
    b, t = first.shape[0], first.shape[-1]
    eye = torch.eye(t, device=first.device, dtype=torch.float32)
    result = eye.expand(b, -1, -1)
    n = int(t * t * discard_ratio)
    for a, g in zip(attentions, gradients, strict=True):
        fused = (a.detach().float() * g.float()).mean(dim=1).clamp_min(0)  # (B, T, T)
        if n:
            flat = fused.reshape(b, t * t)
            flat = flat.scatter(1, flat.topk(n, dim=1, largest=False).indices, 0.0)
            fused = flat.view(b, t, t)
        a_hat = (fused + eye) / 2
        result = (a_hat / a_hat.sum(dim=-1, keepdim=True)) @ result
    return result


@register
class GradRollout(AttentionMethod):
    name = "grad_rollout"
    summary = "Gradient rollout: rollout of attention times its gradient, ReLU after the head mean."
    paper = ("Gildenblat, vit-explain (github.com/jacobgil/vit-explain), after Abnar & Zuidema 2020 and "
             "Chefer et al. 2021")
    options = {
        **ATTENTION_OPTIONS,
        "discard_ratio": Option(0.9, "fraction of the lowest fused entries set to 0 in every block "
                                "(vit-explain's default 0.9)", minimum=0.0, maximum=0.99),
    }

    def relevance(self, fwd: Forward, extra: object) -> Tensor:
        k_total = fwd.targets.shape[1]
        rows = []
        for k in range(k_total):
            grads = chosen_logit_gradients(fwd, k, fwd.attentions, last=k == k_total - 1)
            rolled = grad_rollout(fwd.attentions, list(grads), self.opts["discard_ratio"])
            rows.append(class_row(rolled, fwd.prefix))  # (B, T)
        return torch.stack(rows, dim=1)  # (B, K, T)
