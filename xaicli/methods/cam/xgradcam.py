"""XGrad-CAM (Fu et al., BMVC 2020, arXiv:2008.02312).

Grad-CAM's weights re-derived from two axioms (sensitivity and conservation): each gradient is
weighted by its activation's share of the channel's total,

    alpha^c_k = sum_ij (A^k_ij / sum_ab A^k_ab) * dy^c/dA^k_ij
    L^c       = ReLU(sum_k alpha^c_k A^k)

A channel whose activations sum to exactly 0 gets weight 0 (0/0). ``eps`` is added to the denominator:
pytorch-grad-cam adds 1e-7 (``eps: 1e-7`` reproduces it); the paper adds nothing, the default. On
pre-activation layers (values of both signs) a channel sum near 0 makes its weight large under either
choice: XGrad-CAM is meant for post-ReLU feature maps, as in the paper.
"""

import torch
from torch import Tensor

from xaicli.methods.base import Option
from xaicli.methods.cam.base import CAM_OPTIONS, GradientCAM
from xaicli.methods.registry import register


@register
class XGradCAM(GradientCAM):
    name = "xgradcam"
    summary = "XGrad-CAM: gradients weighted by each activation's share of its channel's sum, ReLU."
    paper = "Fu et al., Axiom-based Grad-CAM, BMVC 2020 (arXiv:2008.02312)"
    options = {
        **CAM_OPTIONS,
        "eps": Option(0.0, "added to each channel's activation sum before dividing; pytorch-grad-cam uses "
                           "1e-7", minimum=0.0),
    }

    def channel_weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        total = acts.sum(dim=(2, 3), keepdim=True) + self.opts["eps"]  # (B, C, 1, 1)
        share = acts / torch.where(total != 0, total, torch.ones_like(total))  # (B, C, h, w)
        return (share * grads).sum(dim=(2, 3))
