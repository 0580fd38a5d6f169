"""Grad-CAM++ (Chattopadhyay et al., WACV 2018, arXiv:1710.11063), the authors' formulation (seed 001).

With y^c = exp(S^c) the higher derivatives are powers of the first one (eq. 18-19), so with g = dS^c/dA:

    alpha^kc_ij = g_ij^2 / (2 g_ij^2 + sum_ab A^k_ab g_ij^3)     (eq. 19; 0/0 -> 0)
    w^c_k       = sum_ij alpha^kc_ij ReLU(g_ij)                  (eq. 7; the exp(S) factor cancels)

``alpha_norm`` (default true, as seed 001 and the paper's released code): each channel's alphas are
divided by their sum over positions before weighting. pytorch-grad-cam does not do this
(``alpha_norm: false``) and adds 1e-6 to every denominator (``eps: 1e-6``). By default we add nothing
and replace exact zeros by 1, as the authors' code does. The epsilon matters when gradients are
small: with g ~ 1e-3 (common for a well-trained small model such as the bundled one) g^2 is as large
as the epsilon, and pytorch-grad-cam's alphas shrink; its maps then correlate only ~0.95 with the
formula's. With ``eps: 1e-6`` the two agree (tests/test_parity_gradcam.py).
"""

import torch
from torch import Tensor

from xaicli.methods.base import Option
from xaicli.methods.cam.base import CAM_OPTIONS, GradientCAM
from xaicli.methods.registry import register


@register
class GradCAMPlusPlus(GradientCAM):
    name = "gradcam_pp"
    summary = "Grad-CAM++: positive gradients weighted by second/third-order alphas."
    paper = "Chattopadhyay et al., Grad-CAM++, WACV 2018 (arXiv:1710.11063)"
    # the alphas' derivation (eq. 10-19) takes A >= 0: with mostly negative activations the denominators
    # 2 g^2 + sum(A) g^3 change sign and the alphas blow up (|alpha| ~ 1e4 at the demo's features.1.bn)
    nonnegative_activations = True
    options = {
        **CAM_OPTIONS,
        "alpha_norm": Option(True, "normalise each channel's alphas to sum to 1 over positions (seed 001, "
                                   "authors' code); false = pytorch-grad-cam"),
        "eps": Option(0.0, "added to the alpha denominator; pytorch-grad-cam uses 1e-6, which damps alphas "
                           "where gradients are small (g^2 ~ eps)", minimum=0.0),
    }

    def channel_weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        g2 = grads.pow(2)
        g3 = g2 * grads
        global_sum = acts.sum(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        denom = 2.0 * g2 + global_sum * g3 + self.opts["eps"]
        alphas = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        if self.opts["alpha_norm"]:
            norm = alphas.sum(dim=(2, 3), keepdim=True)
            alphas = alphas / torch.where(norm != 0, norm, torch.ones_like(norm))
        return (alphas * torch.relu(grads)).sum(dim=(2, 3))
