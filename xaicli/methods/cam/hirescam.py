"""HiResCAM (Draelos & Carin, 2020, arXiv:2011.08891).

The gradient multiplies its own activation, element by element, before the channels are summed:

    L^c = ReLU(sum_k dy^c/dA^k (.) A^k)

Grad-CAM averages the gradient over positions first, which can highlight positions the score does not
depend on. For a model whose score is a linear function of the layer's output (the layer followed by
flatten + linear), ``sum_k dy^c/dA^k (.) A^k`` is exactly each position's contribution to the score
(the paper's faithfulness argument).
"""

from torch import Tensor

from xaicli.methods.cam.base import GradientCAM
from xaicli.methods.registry import register


@register
class HiResCAM(GradientCAM):
    name = "hirescam"
    summary = "HiResCAM: element-wise gradient x activation summed over channels, ReLU."
    paper = "Draelos & Carin, Use HiResCAM instead of Grad-CAM, 2020 (arXiv:2011.08891)"

    def weighted_sum(self, acts: Tensor, grads: Tensor) -> Tensor:
        return (grads * acts).sum(dim=1)
