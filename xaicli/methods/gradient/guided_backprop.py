"""Guided backpropagation (Springenberg et al., ICLR-W 2015, arXiv:1412.6806, sec. 3.4, fig. 1).

The input gradient of the target logit, with every ReLU's backward pass replaced by (seed 002)

    dL/dX = (X > 0) * (dL/dZ > 0) * dL/dZ

i.e. a gradient passes a ReLU only where the forward input was positive (ordinary backprop) AND the
gradient arriving from above is positive (deconvnet). See :mod:`._relu_rules` for which activations are
covered (``nn.ReLU`` modules and the functional ReLUs; ReLU6/SiLU/... keep their ordinary gradient).
"""

from torch import Tensor

from xaicli.methods.base import Call, TargetSpec
from xaicli.methods.gradient._base import Attribution, PixelMethod, input_gradients
from xaicli.methods.registry import register


@register
class GuidedBackprop(PixelMethod):
    name = "guided_backprop"
    summary = "Guided backpropagation: gradients pass a ReLU only if its input and the gradient are positive."
    paper = "Springenberg et al., Striving for Simplicity, ICLR Workshop 2015 (arXiv:1412.6806)"

    can_wrap = True
    relu_rules = True

    def raw(self, x: Tensor, targets: TargetSpec, call: Call) -> Attribution:
        return input_gradients(self.model, x, targets, rule="guided", functional_relu=call.functional_relu)
