"""Layer lookup, listing and the default layer choice (from the probe forward pass, :mod:`.probe`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import Tensor, nn

from xaicli.errors import UnknownNameError
from xaicli.models.probe import LayerInfo, probe_model

__all__ = ["LayerInfo", "default_layer", "default_layer_of", "describe_layers", "find_module",
           "negative_fractions"]


def find_module(model: nn.Module, name: str, key: str | None = None) -> nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``), with close matches on a miss."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        raise UnknownNameError("layer", name, [n for n in modules if n], key=key)
    return modules[name]


def describe_layers(model: nn.Module, input_shape: tuple[int, int, int],
                    names: Collection[str] | None = None) -> list[LayerInfo]:
    """Every named module (or those in ``names``) with its output shape for a (C, H, W) input, in
    definition order, from one probe forward pass (:func:`~xaicli.models.probe.probe_model`; a loaded
    model already has one: ``LoadedModel.probe``). Modules that refuse hooks (inside a compiled
    TorchScript call) are listed with no shape."""
    return [i for i in probe_model(model, input_shape).layers if names is None or i.name in names]


def negative_fractions(model: nn.Module, layers: Collection[str], probe: Tensor) -> dict[str, float]:
    """Share of negative values in each layer's output for the (N, C, H, W) ``probe`` input (on the
    model's device). Layers that refuse hooks or are not called are left out."""
    found: dict[str, float] = {}
    handles = []

    def make(name: str):
        def hook(_m: nn.Module, _i: tuple, out: object) -> None:
            if isinstance(out, Tensor) and out.numel():
                found[name] = float((out.detach() < 0).float().mean())

        return hook

    try:
        for name in layers:
            try:
                handles.append(find_module(model, name).register_forward_hook(make(name)))
            except (RuntimeError, AttributeError):
                continue
        with torch.no_grad():
            model(probe)
    finally:
        for h in handles:
            h.remove()
    return found


def default_layer(model: nn.Module, input_shape: tuple[int, int, int]) -> str | None:
    """The last spatial feature map before pooling: the usual Grad-CAM choice (e.g. ResNet's ``layer4``);
    see :func:`default_layer_of`."""
    return default_layer_of(describe_layers(model, input_shape))


def default_layer_of(layers: Sequence[LayerInfo]) -> str | None:
    """The default CAM layer among ``layers`` (a probe's): among the modules whose output is the last
    executed (C, h, w) map with h, w > 1, the outermost one (shortest name), so ``layer4`` wins over
    ``layer4.1.relu``.
    """
    infos = [i for i in layers
             if i.shape is not None and len(i.shape) == 3 and min(i.shape[1:]) > 1
             and not i.type.startswith("Adaptive")]  # VGG's 7x7 AdaptiveAvgPool2d is not a feature map
    if not infos:
        return None
    last = max(i.order for i in infos)
    shape = next(i.shape for i in infos if i.order == last)
    # a container and its last children finish one after another with the same output
    same = [i for i in infos if i.shape == shape and i.order >= last - 3]
    return min(same, key=lambda i: (i.name.count("."), -i.order)).name
