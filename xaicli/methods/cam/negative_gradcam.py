"""Negative (counterfactual) Grad-CAM (Selvaraju et al. 2017, sec. 5; seed 004).

L^c = ReLU(-sum_k alpha^c_k A^k): regions whose removal would raise the score of class c, i.e. evidence
against it. Same weights as Grad-CAM, opposite sign before the ReLU.
"""

from xaicli.methods.cam.gradcam import GradCAM
from xaicli.methods.registry import register


@register
class NegativeGradCAM(GradCAM):
    name = "negative_gradcam"
    summary = "Counterfactual Grad-CAM: ReLU of the negated weighted sum (evidence against the class)."
    paper = "Selvaraju et al., Grad-CAM, ICCV 2017, sec. 5 'counterfactual explanations'"
    sign = -1.0
