"""LeGrad (Bousselham et al., "LeGrad: An Explainability Method for Vision Transformers via Feature
Formation Sensitivity", arXiv:2404.03214), as implemented by torchcam 0.5 (``torchcam.methods.LeGrad``).

Every block ``l`` gets its own class score: the block's output tokens ``z^l``, mean-pooled and passed
through the model's final norm and classifier (:class:`xaicli.models.vit.TokenHead`),
``s^l = head(norm(mean_t z^l))``. The map is the positive gradient of that score with respect to the
block's attention probabilities, averaged over heads and queries, per key token, then over blocks::

    E^l = mean_(h, i) ReLU(d s^l_c / d A^l_(h, i, j))     (B, T) for key tokens j
    map = mean_l E^l   over the patch tokens

Attention values are not multiplied in (the gradient alone measures how sensitive the feature formation
is). ``last_blocks`` limits the average to the last N blocks (torchcam's example on ViT-B uses the last
4); the default is all blocks. One backward pass per block and target rank, each from that block's score
down to its own attention only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from xaicli.methods.base import Option
from xaicli.methods.registry import register
from xaicli.methods.transformer._base import ATTENTION_OPTIONS, AttentionMethod, Forward
from xaicli.models.layers import find_module
from xaicli.models.vit import attention_modules, block_of, token_head


@register
class LeGrad(AttentionMethod):
    name = "legrad"
    summary = "LeGrad: positive gradients of each block's own class score w.r.t. its attention, averaged."
    paper = "Bousselham et al., LeGrad, 2024 (arXiv:2404.03214); as in torchcam 0.5"
    options = {
        **ATTENTION_OPTIONS,
        "last_blocks": Option(0, "average over the last N blocks only (0 = all blocks)", minimum=0),
    }

    @contextmanager
    def extra_capture(self) -> Iterator[dict[str, Tensor]]:
        """Record each block's output tokens (B, T, D), inside the autograd graph."""
        outputs: dict[str, Tensor] = {}
        handles = []

        def make(name: str):
            def hook(_module, _inputs, output: Tensor) -> None:
                outputs[name] = output

            return hook

        try:
            for name in self._block_names():
                handles.append(find_module(self.model, name).register_forward_hook(make(name)))
            yield outputs
        finally:
            for h in handles:
                h.remove()

    def _block_names(self) -> list[str]:
        return [block_of(name) for name, _ in attention_modules(self.model)]

    def relevance(self, fwd: Forward, extra: dict[str, Tensor]) -> Tensor:
        head = token_head(self.model)
        blocks = list(zip(fwd.record.names, self._block_names(), strict=True))
        n = self.opts["last_blocks"]
        if n:
            blocks = blocks[-n:]
        scores = {block: head(extra[block]).float() for _, block in blocks}  # s^l: (B, N) per block
        per_target = []
        for k in range(fwd.targets.shape[1]):
            maps = []
            for i, (attn_name, block) in enumerate(blocks):
                s = scores[block].gather(1, fwd.targets[:, k : k + 1]).sum()
                last = k == fwd.targets.shape[1] - 1 and i == len(blocks) - 1
                (g,) = torch.autograd.grad(s, fwd.record[attn_name], retain_graph=not last)
                maps.append(g.float().clamp_min(0).mean(dim=(1, 2)))  # E^l: (B, T)
            per_target.append(torch.stack(maps).mean(dim=0))
        return torch.stack(per_target, dim=1)  # (B, K, T)
