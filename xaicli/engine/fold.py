"""Fold eval-mode batch norms into the convolutions that feed them (ResNet-18 on 2 CPU cores: ~15 %).

In eval mode ``BatchNorm2d`` is a per-channel affine map, ``y = (x - mean) / sqrt(var + eps) * gamma +
beta``; when ``x`` is the output of a ``Conv2d`` used by nothing else, the pair is one convolution with

    W' = W * s,   b' = (b - mean) * s + beta,   s = gamma / sqrt(var + eps)   (per output channel)

and the batch norm becomes ``nn.Identity`` (same name, so layer names keep working). The pairs are found
by the model's probe forward pass, with hooks on every convolution and batch norm (a batch norm whose
input *is* a convolution's output; :mod:`xaicli.models.probe`, which also keeps every module's output);
whether the convolution's output feeds anything else cannot be seen from hooks, so the result is
verified by one more forward pass: every module's output on the probe input must match the unfolded
model's (``rtol`` 1e-4), otherwise everything is put back. Layers that an attribution hooks are left
alone (a hooked convolution's output would change meaning); a pair folded for an earlier explainer of
the same model is unfolded again when a later one hooks it. The maps are equal up to float rounding.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from xaicli.models.probe import ModelProbe, module_outputs

#: model -> {batch norm name: (conv, original weight, original bias, batch norm)} of its folded pairs
_FOLDED: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple]] = weakref.WeakKeyDictionary()


def fold_batchnorms(model: nn.Module, example: Tensor, protected: Iterable[str] = (),
                    probe: ModelProbe | None = None) -> list[str]:
    """Fold every safe (conv, batch norm) pair of an eval-mode ``model`` in place; return the batch norms
    folded (empty when nothing was safe to fold, or the check failed and everything was restored).

    ``probe``: the model's probe (:mod:`xaicli.models.probe`) on ``example``, with its module outputs, on
    the device the model is on now - then the model runs once (the check), not twice."""
    if isinstance(model, torch.jit.ScriptModule) or model.training:
        return []
    protected = set(protected)
    folded = _FOLDED.setdefault(model, {})
    for bn_name, (conv, weight, bias, bn) in list(folded.items()):  # folded earlier, hooked now: undo
        conv_name = next((n for n, m in model.named_modules() if m is conv), None)
        if conv_name is not None and {conv_name, bn_name} & protected:
            _restore(model, [(conv, weight, bias, bn_name, bn)])
        if conv_name is None or {conv_name, bn_name} & protected:
            del folded[bn_name]
    modules = dict(model.named_modules())
    outputs = probe.take_outputs() if probe is not None else {}
    if outputs and not folded:
        before, pairs = outputs, list(probe.bn_pairs)
    else:  # no probe (or it was taken before an earlier fold changed the model): run one now
        before, pairs = module_outputs(model, example)
    pairs = [(conv, bn) for conv, bn in pairs if not {conv, bn} & protected
             and modules[conv].out_channels == modules[bn].num_features]
    if not pairs:
        return []
    saved = []
    for conv_name, bn_name in pairs:
        conv, bn = modules[conv_name], modules[bn_name]
        saved.append((conv, conv.weight.data, conv.bias, bn_name, bn))
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
                torch.rsqrt(bn.running_var + bn.eps)
            shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
            bias = shift if conv.bias is None else conv.bias * scale + shift
            conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), conv.weight.requires_grad)
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype), conv.weight.requires_grad)
        _set(model, bn_name, nn.Identity())
    after, _ = module_outputs(model, example)
    folded_convs = {c for c, _ in pairs}
    same = all(name in after and after[name].shape == t.shape
               and torch.allclose(after[name], t, rtol=1e-4, atol=1e-4 * float(t.abs().max().clamp_min(1)))
               for name, t in before.items() if name not in folded_convs)
    if same:
        folded.update({bn_name: (conv, weight, bias, bn) for conv, weight, bias, bn_name, bn in saved})
        return [bn for _, bn in pairs]
    _restore(model, saved)  # a convolution output had another consumer
    return []


def _restore(model: nn.Module, saved: list[tuple]) -> None:
    """Put the original weights and batch norms back, on the device and in the layout the model has now."""
    for conv, weight, bias, bn_name, bn in saved:
        device = conv.weight.device
        layout = torch.channels_last if conv.weight.is_contiguous(memory_format=torch.channels_last) \
            and not conv.weight.is_contiguous() else torch.contiguous_format
        weight = weight.to(device).contiguous(memory_format=layout)
        conv.weight = nn.Parameter(weight, conv.weight.requires_grad)
        conv.bias = None if bias is None else nn.Parameter(bias.detach().to(device), bias.requires_grad)
        _set(model, bn_name, bn.to(device))


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
