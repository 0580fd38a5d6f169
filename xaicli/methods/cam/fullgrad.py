"""FullGrad (Srinivas & Fleuret, NeurIPS 2019, arXiv:1905.00780).

The full-gradient decomposition of a ReLU network writes the output as ``f(x) = grad_x f . x + sum_b
grad_b f . b`` over every bias ``b`` of the network; FullGrad shows both parts as one saliency map:

    S(x) = psi(|grad_x f (.) x|) + sum_l sum_c psi(|grad_{z_l} f (.) b_l|_c)

with ``z_l`` the output of a layer with a bias ``b_l`` (per channel), and ``psi`` rescaling a map to
[0, 1] and resizing it bilinearly to the input. The biases are those of every ``nn.Conv2d`` that has one
and of every ``nn.BatchNorm2d`` with running statistics, whose eval-mode bias is ``beta - mean * gamma /
sqrt(var + eps)`` (``- mean / sqrt(var + eps)`` without affine parameters); as in the paper, linear
layers' biases are left out (their gradients have no spatial extent).

FullGrad is not a one-layer CAM: it reads every such layer, so it takes no ``layers`` (``needs_layer``
is false; layers given in a config are ignored, as for pixel methods) and its maps are keyed ``None``
like a pixel method's, written under the ``input`` layer folder. The engine keeps every layer it reads
out of batch-norm folding (:meth:`FullGrad.layers_read`): folding would merge a convolution's and its
batch norm's bias terms into one, which the per-part rescaling does not treat the same way.

Rescaling (``rescale``): ``channel`` (default) rescales every channel of every part on its own, as the
sum over ``c`` of the paper's equation does and as pytorch-grad-cam 1.5.7 does; ``layer`` rescales each
part (the input term, each layer) as a whole, as the authors' released code does. Each rescaling is
``(m - min) / (max - min + eps)`` with ``eps`` = 1e-7 as pytorch-grad-cam (the authors' code: 1e-6), so
a part whose values are all far below ``eps`` is damped rather than stretched to [0, 1]. Resizing is
bilinear with half-pixel centres like pytorch-grad-cam's OpenCV (the authors' code uses
``align_corners=True``); since resizing is linear, the parts of one resolution are summed before they
are resized once. Differences from pytorch-grad-cam: it selects layers by exact type (``Conv2d``,
``BatchNorm2d``; xaicli includes subclasses) and skips batch norms without affine parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xaicli.methods.base import Call, Explanation, Option, TargetSpec, resolve_targets
from xaicli.methods.cam.base import CAM_OPTIONS, CAMMethod
from xaicli.methods.hooks import capture_activations, inference_state
from xaicli.methods.postprocess import upsample
from xaicli.methods.registry import register


def bias_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) of every layer whose bias FullGrad uses, in definition order."""
    found = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            found.append((name, m))
        elif isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
            found.append((name, m))
    return found


def effective_bias(module: nn.Module) -> Tensor:
    """(C,) the bias a layer adds per output channel in eval mode (see the module docstring)."""
    if isinstance(module, nn.BatchNorm2d):
        inv_std = torch.rsqrt(module.running_var + module.eps)
        if module.affine:
            return module.bias - module.running_mean * module.weight * inv_std
        return -module.running_mean * inv_std
    return module.bias


@register
class FullGrad(CAMMethod):
    name = "fullgrad"
    summary = ("FullGrad: |input-gradient x input| plus |bias-gradient x bias| of every conv / batch-norm "
               "layer, each rescaled and summed (no layer to choose).")
    paper = "Srinivas & Fleuret, Full-Gradient Representation, NeurIPS 2019 (arXiv:1905.00780)"
    needs_layer = False
    options = {
        **CAM_OPTIONS,
        "rescale": Option("channel", "rescale each channel of each part to [0, 1] (paper's equation, "
                          "pytorch-grad-cam) or each part as a whole (layer: the authors' code)",
                          choices=("channel", "layer")),
        "eps": Option(1e-7, "added to each rescaled part's range (pytorch-grad-cam 1e-7, authors' code "
                      "1e-6): parts far below it are damped, not stretched to [0, 1]", minimum=0.0),
    }

    def layers_read(self) -> list[str]:
        return [name for name, _ in bias_layers(self.model)]

    def compute(self, x: Tensor, targets: TargetSpec, call: Call) -> Explanation:
        size = (x.shape[-2], x.shape[-1])
        layers = bias_layers(self.model)
        with inference_state(self.model), capture_activations(self.model, [n for n, _ in layers]) as acts:
            with torch.enable_grad():  # also when called from inside torch.no_grad()
                leaf = x.detach().requires_grad_(True)
                logits = self.model(leaf)  # (B, N)
                tgt = resolve_targets(logits, targets)  # (B, K)
                called = [(n, m) for n, m in layers if n in acts]  # layers the forward pass ran
                outputs = [acts[n] for n, _ in called]  # (B, C_l, h_l, w_l) each
                biases = [effective_bias(m).detach().float().view(1, -1, 1, 1) for _, m in called]
                maps = []
                for k in range(tgt.shape[1]):
                    score = logits.gather(1, tgt[:, k : k + 1]).sum()
                    grads = torch.autograd.grad(score, [leaf, *outputs], retain_graph=k < tgt.shape[1] - 1,
                                                allow_unused=True)
                    parts = [grads[0] * leaf]  # (B, C, H, W): the input-gradient term
                    parts += [g * b for g, b in zip(grads[1:], biases, strict=True) if g is not None]
                    maps.append(self.full_map(parts, size))
        return Explanation(maps={None: self.finish(torch.stack(maps, dim=1), size)}, targets=tgt,
                           logits=logits.detach())

    def full_map(self, parts: list[Tensor], size: tuple[int, int]) -> Tensor:
        """(B, C_l, h_l, w_l) gradient x bias (or x input) parts -> (B, H, W) FullGrad map, un-normalised."""
        by_size: dict[tuple[int, int], Tensor] = {}
        for part in parts:
            hw = (part.shape[-2], part.shape[-1])
            term = self.rescaled(part.detach().float().abs()).sum(dim=1)  # (B, h, w)
            by_size[hw] = by_size[hw] + term if hw in by_size else term
        resized = [upsample(s[:, None], size, self.opts["upsample"])[:, 0] for s in by_size.values()]
        return torch.stack(resized).sum(dim=0)

    def rescaled(self, part: Tensor) -> Tensor:
        """(B, C, h, w) -> the same, each channel (``rescale: channel``) or each image's part (``layer``)
        mapped by ``(m - min) / (max - min + eps)``; a constant part becomes 0."""
        flat = part.flatten(2) if self.opts["rescale"] == "channel" else part.flatten(1)[:, None]
        shifted = flat - flat.amin(dim=-1, keepdim=True)
        span = shifted.amax(dim=-1, keepdim=True) + self.opts["eps"]
        return (shifted / torch.where(span > 0, span, torch.ones_like(span))).view_as(part)
