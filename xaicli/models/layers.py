"""Layer lookup, listing and the default layer choice, from the probe forward pass (:mod:`.probe`).

Each listed layer carries the :class:`~xaicli.models.layout.Layout` inferred for its output (NCHW map,
channels-last map, token sequence), which is what ``xaicli layers`` shows and what the default CAM layer
is chosen from (:func:`default_layer`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import Tensor, nn

from xaicli.errors import UnknownNameError
from xaicli.models.layout import Layout, is_channels_last_norm, prefix_tokens, resolve_layout
from xaicli.models.probe import ORIGINAL_TYPE, LayerInfo, probe_model, type_name

__all__ = ["ORIGINAL_TYPE", "LayerInfo", "default_layer", "default_layer_of", "describe_layers",
           "find_module", "last_transformer_block", "layer_layout", "negative_fractions", "type_name"]

REARRANGING = ("Permute", "Flatten", "Unflatten")
"""Modules that only move values around; the default layer is the module that computed them."""


def find_module(model: nn.Module, name: str, key: str | None = None) -> nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``), with close matches on a miss."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        raise UnknownNameError("layer", name, [n for n in modules if n], key=key)
    return modules[name]


def describe_layers(model: nn.Module, input_shape: tuple[int, int, int],
                    names: Collection[str] | None = None) -> list[LayerInfo]:
    """Every named module (or those in ``names``) with its output shape and inferred layout for a
    (C, H, W) input, in definition order, from one probe forward pass
    (:func:`~xaicli.models.probe.probe_model`; a loaded model already has one: ``LoadedModel.probe``).
    Modules that refuse hooks (inside a compiled TorchScript call) are listed with no shape."""
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
    """The layer CAM methods explain when the config names none (:func:`default_layer_of` on one probe
    forward pass)."""
    return default_layer_of(model, describe_layers(model, input_shape))


def default_layer_of(model: nn.Module, infos: Sequence[LayerInfo]) -> str | None:
    """The default CAM layer of ``model`` among ``infos`` (its probe's layers):

    * A vision transformer (a stack of blocks that output tokens, see :func:`last_transformer_block`):
      the last block's first norm - torchvision ViT's ``encoder.layers.encoder_layer_11.ln_1``, timm's
      ``blocks.11.norm1``, Hugging Face's ``layernorm_before`` - the layer pytorch-grad-cam's docs
      recommend: after the last block only the class token reaches the head, so the patch tokens of
      later layers get no gradient.
    * Otherwise the last spatial feature map before pooling, in any layout: ResNet's ``layer4``, a Swin's
      final ``norm`` (channels-last, before the ``Permute``). Among the modules whose output is the last
      executed map with h, w > 1, the outermost one (shortest name) is chosen, so ``layer4`` wins over
      ``layer4.1.relu``; adaptive pools and pure rearrangements (``Permute``, ``Flatten``) are skipped.
    """
    block = last_transformer_block(model, infos)
    if block is not None:
        norms = [f"{block}.{n}" for n, child in find_module(model, block).named_children()
                 if "Norm" in type_name(child)]
        return norms[0] if norms else block
    maps = [i for i in infos
            if i.map_shape is not None and i.layout.kind != "tokens" and min(i.map_shape[1:]) > 1
            and not i.type.startswith("Adaptive")  # VGG's 7x7 AdaptiveAvgPool2d is not a feature map
            and i.type not in REARRANGING]
    if not maps:
        return None
    last = max(i.order for i in maps)
    shape = next(i.map_shape for i in maps if i.order == last)
    # a container and its last children finish one after another with the same output
    same = [i for i in maps if i.map_shape == shape and i.order >= last - 3]
    return min(same, key=lambda i: (i.name.count("."), -i.order)).name


def last_transformer_block(model: nn.Module, infos: Sequence[LayerInfo]) -> str | None:
    """The last block of the model's transformer stack, if it has one.

    A stack is a container whose children (two or more) have one type and output token sequences of one
    shape: torchvision's ``encoder.layers``, timm's ``blocks``, Hugging Face's ``encoder.layer``. (A child
    whose output is not a tensor is allowed: ``torch.export`` programs sometimes return extra values from
    the first block; the last one must output tokens.) Swin stages output channels-last maps, not tokens,
    so they are no such stack. The stack that runs last wins; its last child is returned.
    """
    by_name = {i.name: i for i in infos}
    best: tuple[int, str] | None = None
    for name, module in model.named_modules():
        kids = [by_name.get(f"{name}.{n}" if name else n) for n, _ in module.named_children()]
        if len(kids) < 2 or any(k is None for k in kids) or len({k.type for k in kids}) != 1:
            continue
        shaped = [k for k in kids if k.shape is not None]
        last = max(kids, key=lambda k: k.order)
        if last.shape is None or any(k.layout is None or k.layout.kind != "tokens" for k in shaped) \
                or len({k.shape for k in shaped}) != 1:
            continue
        if best is None or last.order > best[0]:
            best = (last.order, last.name)
    return best[1] if best else None


def layer_layout(model: nn.Module, name: str, shape: tuple[int, ...], input_size: tuple[int, int],
                 choice: str = "auto", grid: list[int] | tuple[int, int] | None = None) -> Layout:
    """The layout of layer ``name``'s per-image output ``shape`` for an ``input_size`` (H, W) input: what
    :func:`~xaicli.models.layout.resolve_layout` decides with the model's prefix tokens and the module's
    type as hints, ``choice`` / ``grid`` as the user's override. Raises ModelError when none fits."""
    module = find_module(model, name)
    return resolve_layout(shape, input_size, choice, grid, prefix=prefix_tokens(model),
                          channels_last=is_channels_last_norm(module, shape, type_name(module)), layer=name)
