"""Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391).

alpha^c_k = 1/Z sum_ij dy^c/dA^k_ij      (eq. 1: global-average-pooled gradients)
L^c = ReLU(sum_k alpha^c_k A^k)           (eq. 2)
"""

from torch import Tensor

from xaicli.methods.cam.base import GradientCAM
from xaicli.methods.registry import register


@register
class GradCAM(GradientCAM):
    name = "gradcam"
    summary = "Grad-CAM: activations weighted by their spatially averaged gradients, ReLU."
    paper = "Selvaraju et al., Grad-CAM, ICCV 2017 (arXiv:1610.02391)"

    def channel_weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        return grads.mean(dim=(2, 3))
