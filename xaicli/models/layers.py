"""Layer listing and the default layer choice, from one hooked dummy forward pass.

Each listed layer carries the :class:`~xaicli.models.layout.Layout` inferred for its output (NCHW map,
channels-last map, token sequence), which is what ``xaicli layers`` shows and what the default CAM layer
is chosen from (:func:`default_layer`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xaicli.errors import ModelError, UnknownNameError
from xaicli.models.layout import Layout, infer_layout, is_channels_last_norm, prefix_tokens, resolve_layout

ORIGINAL_TYPE = "_xaicli_original_type"
"""Attribute holding a module's original class name where loading replaced the class (``torch.export``
programs become ``InterpreterModule`` s); read by :func:`type_name`."""

REARRANGING = ("Permute", "Flatten", "Unflatten")
"""Modules that only move values around; the default layer is the module that computed them."""


def type_name(module: nn.Module) -> str:
    """The module's class name, or its original one (see :data:`ORIGINAL_TYPE`)."""
    return getattr(module, ORIGINAL_TYPE, None) or type(module).__name__


def find_module(model: nn.Module, name: str, key: str | None = None) -> nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``), with close matches on a miss."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        raise UnknownNameError("layer", name, [n for n in modules if n], key=key)
    return modules[name]


@dataclass
class LayerInfo:
    name: str
    type: str
    shape: tuple[int, ...] | None  # output shape for one input image, None if not called
    order: int  # position in execution order (-1: never called)
    hooked: bool = True  # False: the module refused a hook (its shape and order are unknown)
    layout: Layout | None = None  # how its output reads as a (C, h, w) map; None: not spatial

    @property
    def map_shape(self) -> tuple[int, int, int] | None:
        """(C, h, w) of the map its output gives (after the layout step), None when not spatial."""
        return self.layout.nchw_shape(self.shape) if self.layout and self.shape else None


def describe_layers(model: nn.Module, input_shape: tuple[int, int, int],
                    names: Collection[str] | None = None) -> list[LayerInfo]:
    """Every named module (or those in ``names``) with its output shape for a (C, H, W) input, in
    definition order. The dummy input goes to the model's device; modules that refuse hooks (inside a
    compiled TorchScript call) are listed with no shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    order: dict[str, int] = {}
    counter = [0]
    handles = []

    def make(name: str):
        def hook(_m: nn.Module, _i: tuple, out: object) -> None:
            if isinstance(out, Tensor):
                shapes[name] = tuple(out.shape[1:])
            counter[0] += 1
            order[name] = counter[0]  # containers finish after their children

        return hook

    wanted = [(n, m) for n, m in model.named_modules() if n and (names is None or n in names)]
    refused: set[str] = set()
    try:
        for name, module in wanted:
            try:
                handles.append(module.register_forward_hook(make(name)))
            except (RuntimeError, AttributeError, ModelError):
                refused.add(name)
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
    prefix = prefix_tokens(model)
    size = (int(input_shape[-2]), int(input_shape[-1]))
    infos = []
    for n, m in wanted:
        shape, kind = shapes.get(n), type_name(m)
        layout = None
        if shape is not None:
            layout = infer_layout(shape, size, prefix=prefix,
                                  channels_last=is_channels_last_norm(m, shape, kind))
        infos.append(LayerInfo(n, kind, shape, order.get(n, -1), n not in refused, layout))
    return infos


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
    """The layer CAM methods explain when the config names none.

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
    infos = describe_layers(model, input_shape)
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


def last_transformer_block(model: nn.Module, infos: list[LayerInfo]) -> str | None:
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
