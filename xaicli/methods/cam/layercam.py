"""LayerCAM (Jiang et al., IEEE TIP 2021, doi:10.1109/TIP.2021.3089943).

Every position gets its own weight, the positive part of its gradient, instead of one weight
per channel:

    M^c = ReLU(sum_k ReLU(dy^c/dA^k) (.) A^k)

which keeps fine detail on shallow layers where Grad-CAM's averaged weights wash it out. For such layers
the paper rescales the map as ``tanh(gamma * M / max M)`` with gamma = 2 before combining
layers; ``gamma`` enables that (0, the default, leaves the map as pytorch-grad-cam does).
"""

import torch
from torch import Tensor

from xaicli.methods.base import Option
from xaicli.methods.cam.base import CAM_OPTIONS, GradientCAM
from xaicli.methods.registry import register


@register
class LayerCAM(GradientCAM):
    name = "layercam"
    summary = "LayerCAM: activations weighted position by position by their positive gradients, ReLU."
    paper = "Jiang et al., LayerCAM, IEEE TIP 2021 (doi:10.1109/TIP.2021.3089943)"
    options = {
        **CAM_OPTIONS,
        "gamma": Option(0.0, "shallow-layer scaling tanh(gamma * M / max M) as in the paper (it uses "
                             "2); 0 = off, as pytorch-grad-cam", minimum=0.0),
    }

    def weighted_sum(self, acts: Tensor, grads: Tensor) -> Tensor:
        cam = (torch.relu(grads) * acts).sum(dim=1)  # (B, h, w)
        gamma = self.opts["gamma"]
        if not gamma:
            return cam
        top = cam.flatten(1).amax(dim=1).view(-1, 1, 1)  # (B, 1, 1)
        return torch.tanh(gamma * cam / torch.where(top > 0, top, torch.ones_like(top)))
