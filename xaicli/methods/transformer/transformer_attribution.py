"""Transformer attribution: gradient-weighted attention relevance (Chefer, Gur & Wolf).

"Transformer Interpretability Beyond Attention" (CVPR 2021, arXiv:2012.09838) weights each block's
attention by its gradient and keeps the positive part, averaged over heads, then accumulates it through
the blocks; "Generic Attention-model Explainability" (ICCV 2021, arXiv:2103.15679, eqs. 5-6) states the
rule used here and in the authors' ViT notebook, where the attention itself replaces the LRP relevance of
the CVPR paper (so no relevance-propagation rules are needed for every layer)::

    Ā^l = E_h[(∇A^l ⊙ A^l)^+]        ∇A^l = d y^c / d A^l, the target logit's gradient (eq. 5)
    R   = I;  R <- R + Ā^l R          for l = 1..L (eq. 6)

and the map is the class token's row of ``R`` over the patch tokens. Unlike rollout it is class-specific
(the gradient picks the evidence for ``c``), and its authors show it beats rollout on ViT.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xaicli.methods.registry import register
from xaicli.methods.transformer._base import AttentionMethod, Forward, chosen_logit_gradients, class_row


def accumulate(attentions: list[Tensor], gradients: list[Tensor]) -> Tensor:
    """Per block (B, heads, T, T) attention and gradient -> (B, T, T) relevance R (eqs. 5-6)."""
    first = attentions[0]
    r = torch.eye(first.shape[-1], device=first.device, dtype=torch.float32).expand(first.shape[0], -1, -1)
    for a, g in zip(attentions, gradients, strict=True):
        weighted = (g.float() * a.detach().float()).clamp_min(0).mean(dim=1)  # Ā^l, (B, T, T)
        r = r + weighted @ r
    return r


@register
class TransformerAttribution(AttentionMethod):
    name = "transformer_attribution"
    summary = "Transformer attribution: attention times its gradient (positive part), summed over blocks."
    paper = ("Chefer, Gur & Wolf, Transformer Interpretability Beyond Attention, CVPR 2021 "
             "(arXiv:2012.09838); rule of Generic Attention-model Explainability, ICCV 2021 "
             "(arXiv:2103.15679)")

    def relevance(self, fwd: Forward, extra: object) -> Tensor:
        k_total = fwd.targets.shape[1]
        rows = []
        for k in range(k_total):
            grads = chosen_logit_gradients(fwd, k, fwd.attentions, last=k == k_total - 1)
            rows.append(class_row(accumulate(fwd.attentions, list(grads)), fwd.prefix))  # (B, T)
        return torch.stack(rows, dim=1)  # (B, K, T)
