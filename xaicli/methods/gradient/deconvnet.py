"""Deconvnet backward pass (Zeiler & Fergus, ECCV 2014, arXiv:1311.2901, sec. 2.1 "rectification").

The input gradient of the target logit, with every ReLU's backward pass replaced by (seed 002's
"Zeiler-Fergus" mode)

    dL/dZ -> (dL/dZ > 0) * dL/dZ

the rectified reconstruction passes back regardless of whether the ReLU was active in the forward pass.
As in Captum's ``Deconvolution``, convolutions and pooling use their ordinary gradients (transposed
filters, max-pool switches), which is what the paper's deconvnet computes. Coverage of activations: see
:mod:`._relu_rules`.
"""

from torch import Tensor

from xaicli.methods.base import Call, TargetSpec
from xaicli.methods.gradient._base import Attribution, PixelMethod, input_gradients
from xaicli.methods.registry import register


@register
class Deconvnet(PixelMethod):
    name = "deconvnet"
    summary = "Deconvnet (Zeiler-Fergus): gradients pass a ReLU only where the incoming gradient is positive."
    paper = ("Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014 "
             "(arXiv:1311.2901)")

    can_wrap = True
    relu_rules = True

    def raw(self, x: Tensor, targets: TargetSpec, call: Call) -> Attribution:
        return input_gradients(self.model, x, targets, rule="deconvnet", functional_relu=call.functional_relu)
