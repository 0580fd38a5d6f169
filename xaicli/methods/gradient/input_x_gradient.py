"""Input x gradient (Shrikumar et al., 2016, arXiv:1605.01713; "gradient * input").

    A^c_i(x) = x_i * d y^c / d x_i

the first-order Taylor term of the logit around the all-zero input, per input element. For a ReLU network
without biases it equals DeepLIFT and integrated gradients with a zero baseline (Ancona et al., ICLR
2018). ``x`` is the *normalised* input the model sees, so "zero" is the dataset mean colour under
mean/std normalisation, as in Captum's ``InputXGradient``.
"""

from torch import Tensor

from xaicli.methods.base import Call, TargetSpec
from xaicli.methods.gradient._base import Attribution, PixelMethod, input_gradients
from xaicli.methods.registry import register


@register
class InputXGradient(PixelMethod):
    name = "input_x_gradient"
    summary = "Input x gradient: each input value times the target logit's derivative with respect to it."
    paper = ("Shrikumar et al., Not Just a Black Box: Learning Important Features Through Propagating "
             "Activation Differences, 2016 (arXiv:1605.01713)")
    can_wrap = True

    def raw(self, x: Tensor, targets: TargetSpec, call: Call) -> Attribution:
        grads = input_gradients(self.model, x, targets)  # (B, K, C, H, W) under key None
        grads.maps[None] = grads.maps[None] * x.detach()[:, None]
        return grads
