"""FullGrad (Srinivas & Fleuret, NeurIPS 2019, arXiv:1905.00780).

The full-gradient decomposition of a ReLU network writes the output as ``f(x) = grad_x f . x + sum_b
grad_b f . b`` over every bias ``b`` of the network; FullGrad shows both parts as one saliency map:

    S(x) = psi(|grad_x f (.) x|) + sum_l sum_c psi(|grad_{z_l} f (.) b_l|_c)

with ``z_l`` the output of a layer with a bias ``b_l`` (per channel), and ``psi`` rescaling a map to
[0, 1] and resizing it bilinearly to the input. The biases are those of every ``nn.Conv2d`` that has one
and of every batch norm with running statistics (``BatchNorm2d``, ``SyncBatchNorm``, torchvision's
``FrozenBatchNorm2d``), whose eval-mode bias is ``beta - mean * gamma / sqrt(var + eps)`` (``- mean /
sqrt(var + eps)`` without affine parameters); as in the paper, linear layers' biases are left out (their
gradients have no spatial extent). Layers of a TorchScript model loaded by xaicli count by the class they
were compiled from.

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
``BatchNorm2d``; xaicli includes subclasses and the batch norms above) and skips batch norms without
affine parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xaicli.methods.base import Call, Explanation, Option, TargetSpec, resolve_targets
from xaicli.methods.cam.base import CAM_OPTIONS, CAMMethod
from xaicli.methods.hooks import capture_activations, inference_state
from xaicli.methods.modules import is_a, nn_class
from xaicli.methods.postprocess import upsample
from xaicli.methods.registry import register

BATCH_NORMS = ("BatchNorm2d", "SyncBatchNorm", "FrozenBatchNorm2d")
"""Class names of the batch norms whose eval-mode shift FullGrad uses (torchvision's frozen one included)."""


def bias_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) of every layer whose bias FullGrad uses, in definition order: convolutions with
    a bias and batch norms with running statistics (also in a TorchScript model loaded by xaicli)."""
    found = []
    for name, m in model.named_modules():
        cls = nn_class(m)
        if is_a(m, nn.Conv2d) and getattr(m, "bias", None) is not None:
            found.append((name, m))
        elif cls is not None and cls.__name__ in BATCH_NORMS and _has_statistics(m):
            found.append((name, m))
    return found


def _has_statistics(m: nn.Module) -> bool:
    return getattr(m, "running_mean", None) is not None and getattr(m, "running_var", None) is not None


@torch.no_grad()
def effective_bias(module: nn.Module) -> Tensor:
    """(C,) the bias a layer adds per output channel in eval mode: a convolution's ``bias``; a batch norm's
    output for an all-zero input, ``beta - mean * gamma / sqrt(var + eps)`` (``- mean / sqrt(var + eps)``
    without affine parameters), read off the module itself so that its own ``eps`` is used (a traced
    model keeps it only in its graph)."""
    if is_a(module, nn.Conv2d):
        return module.bias.detach()
    mean = module.running_mean
    return module(torch.zeros((1, mean.shape[0], 1, 1), device=mean.device, dtype=mean.dtype)).flatten()


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
        with inference_state(self.model):
            bias_of = {n: effective_bias(m).float().view(1, -1, 1, 1) for n, m in layers}  # before any hook
            with capture_activations(self.model, list(bias_of)) as acts, torch.enable_grad():
                leaf = x.detach().requires_grad_(True)
                logits = self.model(leaf)  # (B, N)
                tgt = resolve_targets(logits, targets)  # (B, K)
                called = [n for n in bias_of if n in acts]  # the layers the forward pass ran
                outputs = [acts[n] for n in called]  # (B, C_l, h_l, w_l) each
                biases = [bias_of[n] for n in called]
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
