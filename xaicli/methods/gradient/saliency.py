"""Vanilla gradient / saliency map (Simonyan, Vedaldi & Zisserman, ICLR-W 2014, arXiv:1312.6034).

M^c(x) = d y^c / d x        (sec. 3.1: the class score's derivative at the image, first-order Taylor)

y^c is the pre-softmax logit (as the paper's S_c). The paper takes ``max_c |M|`` over colour channels,
which is the default ``reduce: abs_max``.
"""

from torch import Tensor

from xaicli.methods.base import Call, TargetSpec
from xaicli.methods.gradient._base import Attribution, PixelMethod, input_gradients
from xaicli.methods.registry import register


@register
class Saliency(PixelMethod):
    name = "saliency"
    summary = "Vanilla gradient: derivative of the target logit with respect to each input pixel."
    paper = "Simonyan et al., Deep Inside Convolutional Networks, ICLR Workshop 2014 (arXiv:1312.6034)"

    can_wrap = True

    def raw(self, x: Tensor, targets: TargetSpec, call: Call) -> Attribution:
        return input_gradients(self.model, x, targets)
