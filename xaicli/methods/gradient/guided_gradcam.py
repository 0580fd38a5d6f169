"""Guided Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391, sec. 3 "Guided Grad-CAM").

    GGC^c = GB^c (.) upsample(L^c_Grad-CAM)

the element-wise product of the guided-backpropagation input gradient (every colour channel) and the
Grad-CAM map of each target layer, resized to the input. The CAM is computed by
:class:`xaicli.methods.cam.gradcam.GradCAM` (raw, not normalised, so only the final map is normalised);
``upsample`` defaults to bilinear as the paper's code; Captum's ``GuidedGradCam`` uses nearest by
default. Maps are keyed by layer name.
"""

import torch
from torch import Tensor

from xaicli.methods.base import Call, Option, TargetSpec
from xaicli.methods.cam.gradcam import GradCAM
from xaicli.methods.gradient._base import PIXEL_OPTIONS, Attribution, PixelMethod, input_gradients
from xaicli.methods.registry import register


@register
class GuidedGradCAM(PixelMethod):
    name = "guided_gradcam"
    summary = "Guided Grad-CAM: guided backpropagation multiplied by the upsampled Grad-CAM map of a layer."
    paper = "Selvaraju et al., Grad-CAM, ICCV 2017 (arXiv:1610.02391)"
    needs_layer = True
    relu_rules = True
    options = {
        **PIXEL_OPTIONS,
        "upsample": Option("bilinear", "how the Grad-CAM map is resized to the input",
                           choices=("bilinear", "bicubic", "nearest")),
    }

    def raw(self, x: Tensor, targets: TargetSpec, call: Call) -> Attribution:
        gradcam = GradCAM(self.model, self.layers, upsample=self.opts["upsample"], normalise=False)
        with torch.enable_grad():  # GradientCAM takes its scores outside its own enable_grad block
            cam = gradcam.compute(x, targets, call)  # (B, K, H, W) per layer: raw ReLU'd CAMs at input size
        guided = input_gradients(self.model, x, cam.targets, rule="guided",
                                 functional_relu=call.functional_relu).maps[None]  # (B, K, C, H, W)
        maps = {name: guided * cam.maps[name][:, :, None].to(guided.dtype) for name in self.layers}
        return Attribution(maps=maps, targets=cam.targets, logits=cam.logits)
