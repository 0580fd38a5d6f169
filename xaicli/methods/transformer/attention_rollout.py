"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020,
arXiv:2005.00928, sec. 3).

Attention mixes tokens, and the residual connection carries each token on; rollout follows both through
the network by multiplying the per-block attention, averaged over heads, with the identity added::

    Â^l = (Ā^l + I) / 2, rows renormalised to sum to 1
    R   = Â^L Â^(L-1) ... Â^1                      (B, T, T): how much token j flows into token i

and the map is the class token's row of ``R`` over the patch tokens (the mean of all rows for a model
without a class token). ``head_fusion`` chooses how heads are fused (mean: the paper; max and min as in
jacobgil/vit-explain, the common transcription), ``discard_ratio`` zeroes that fraction of the lowest
entries of each fused matrix first (vit-explain; the class-token-to-itself entry is never dropped).
Unlike vit-explain, whose ``a / a.sum(dim=-1)`` divides column ``j`` by row ``j``'s sum, rows are
renormalised as the paper says (the two agree while nothing is discarded). Target-independent: every
target gets the same map.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xaicli.methods.base import Option
from xaicli.methods.registry import register
from xaicli.methods.transformer._base import ATTENTION_OPTIONS, AttentionMethod, Forward, class_row

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(attention: Tensor, how: str) -> Tensor:
    """(B, heads, T, T) -> (B, T, T) by the mean, max or min over heads."""
    if how == "mean":
        return attention.mean(dim=1)
    return attention.amax(dim=1) if how == "max" else attention.amin(dim=1)


def discard_lowest(fused: Tensor, ratio: float) -> Tensor:
    """Zero the ``ratio`` fraction of lowest entries of each (T, T) matrix, except entry (0, 0)."""
    b, t, _ = fused.shape
    n = int(t * t * ratio)
    if n == 0:
        return fused
    flat = fused.reshape(b, t * t).clone()
    lowest = flat.topk(n, dim=1, largest=False).indices  # (B, n)
    keep = flat[:, :1].clone()
    flat.scatter_(1, lowest, 0.0)
    flat[:, :1] = keep
    return flat.view(b, t, t)


def rollout(attentions: list[Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0) -> Tensor:
    """[(B, heads, T, T)] per block -> (B, T, T) rolled-out attention (module docstring)."""
    first = attentions[0]
    eye = torch.eye(first.shape[-1], device=first.device, dtype=torch.float32)
    result = eye.expand(first.shape[0], -1, -1)
    for attention in attentions:
        fused = discard_lowest(fuse_heads(attention.float(), head_fusion), discard_ratio)
        a = (fused + eye) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result


@register
class AttentionRollout(AttentionMethod):
    name = "attention_rollout"
    summary = "Attention rollout: head-fused attention plus the residual identity, multiplied over blocks."
    paper = "Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020 (arXiv:2005.00928)"
    uses_gradients = False
    options = {
        **ATTENTION_OPTIONS,
        "head_fusion": Option("mean", "how the heads' attention is fused: mean (the paper), max or min",
                              choices=HEAD_FUSIONS),
        "discard_ratio": Option(0.0, "fraction of the lowest fused attention entries set to 0 in every block "
                                "(vit-explain uses 0.9; the paper none)", minimum=0.0, maximum=0.99),
    }

    def relevance(self, fwd: Forward, extra: object) -> Tensor:
        rolled = rollout(fwd.attentions, self.opts["head_fusion"], self.opts["discard_ratio"])  # (B, T, T)
        row = class_row(rolled, fwd.prefix)  # (B, T)
        return row[:, None].expand(-1, fwd.targets.shape[1], -1)  # the same for every target
