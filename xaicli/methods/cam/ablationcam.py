"""Ablation-CAM (Desai & Ramaswamy, WACV 2020).

Gradient-free: each channel's weight is the relative drop of the target score when that channel is
removed (set to zero) from the layer's output,

    w^c_k = (y^c - y^c_k) / y^c              (y^c_k: the score with channel k of the layer zeroed)
    L^c   = ReLU(sum_k w^c_k A^k)

A target whose clean score is exactly 0 gets weights 0. All K targets share the ablated forward passes.

Batched ablations: the B x C ablated copies (image-major rows) run ``chunk_size`` at a time. The network
below the layer computes the same thing for every copy of an image, so it runs once per image of the
chunk: a hook on the layer replaces its output, (u images, C, h, w), by the (n rows, C, h, w) ablated
copies, and only the rest of the network runs on all n rows (on ResNet-18's ``layer4`` that is the
pooling and the classifier, so an image costs about one forward pass instead of C / chunk_size).
Where the model reuses a tensor from below the layer after it (a skip connection around the layer), the
shapes no longer line up (or, with u = 1 or u = n, broadcast to exactly the expanded result); if the
forward pass then fails or returns the wrong number of rows, this layer falls back to running every row
through the whole network, as pytorch-grad-cam does. A module called several times per forward pass is
ablated at every call.

Differences from pytorch-grad-cam 1.5.7, which ablates by replacing the layer module: where a layer's
output is never exactly 0 (a pre-activation layer) it sets the channel to ``min - 1e7`` instead of 0,
and the minimum it uses includes the rows it already ablated, so the replacement value grows with the
channel's position in its batch of 32. The paper and xaicli ablate to 0; on post-ReLU layers (minimum 0)
the two agree (tests/test_parity_gradcam.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xaicli.methods.base import CHUNK_OPTION, Call
from xaicli.methods.cam.base import CAM_OPTIONS, ForwardCAM
from xaicli.methods.hooks import replace_output
from xaicli.methods.registry import register


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


@register
class AblationCAM(ForwardCAM):
    name = "ablationcam"
    summary = "Ablation-CAM: channels weighted by the relative score drop when each is zeroed (no gradients)."
    paper = "Desai & Ramaswamy, Ablation-CAM, WACV 2020 (doi:10.1109/WACV45572.2020.9093360)"
    chunked = True
    default_chunk_size = 128
    options = {**CAM_OPTIONS, "chunk_size": CHUNK_OPTION}

    def __init__(self, model: nn.Module, layers: Sequence[str] = (), **options: Any) -> None:
        super().__init__(model, layers, **options)
        self.below_once: dict[str, bool] = {}  # layer -> whether running the network below it once works

    def layer_cam(self, x: Tensor, layer: str, acts: Tensor, logits: Tensor, tgt: Tensor,
                  call: Call) -> Tensor:
        b, c = acts.shape[:2]
        k = tgt.shape[1]
        clean = logits.float().gather(1, tgt)  # (B, K)
        ablated = torch.empty((b * c, k), device=acts.device)  # row = image * C + channel
        for start in range(0, b * c, call.chunk_size):
            stop = min(start + call.chunk_size, b * c)
            ablated[start:stop] = self.ablated_scores(x, layer, start, stop, c, tgt).float()
        scale = torch.where(clean != 0, clean, torch.inf)[:, None]  # (B, 1, K); a zero score -> weights 0
        weights = (clean[:, None] - ablated.view(b, c, k)) / scale  # (B, C, K)
        return torch.relu(torch.einsum("bck,bchw->bkhw", weights, acts))  # (B, K, h, w)

    def ablated_scores(self, x: Tensor, layer: str, start: int, stop: int, c: int, tgt: Tensor) -> Tensor:
        """(n, K) target scores of rows ``start..stop-1`` (row = image * C + channel): each row's image with
        that channel of ``layer`` zeroed."""
        rows = torch.arange(start, stop, device=x.device)  # (n,)
        img, channel = rows // c, rows % c
        n, first = stop - start, start // c
        images = (stop - 1) // c - first + 1  # the chunk's images: first .. first + images - 1
        local = img - first  # row -> position among the chunk's images
        row = torch.arange(n, device=x.device)

        def ablate(out: Tensor) -> Tensor:
            # (images or n, C, h, w) -> (n, C, h, w): one copy per row, its channel zeroed
            copies = out[local] if out.shape[0] == images else out.clone()
            copies[row, channel] = 0
            return copies

        if self.below_once.get(layer, True):
            try:
                with replace_output(self.model, layer, ablate):
                    out = self.model(x[first : first + images])  # the network below the layer: once per image
                if out.shape[0] == n:
                    self.below_once[layer] = True
                    return out.gather(1, tgt[img])
            except RuntimeError as err:  # a skip connection around the layer: shapes do not line up
                if _is_oom(err):
                    raise
            self.below_once[layer] = False
        with replace_output(self.model, layer, ablate):
            return self.model(x[img]).gather(1, tgt[img])  # every row through the whole network
