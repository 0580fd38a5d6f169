"""Candidate layers for a layer sweep (``xaicli sweep --layers auto``), picked the way seed 000 did.

Seed 000 explains a 3-block CNN at six feature maps: for every conv block, the map before the
activation (after batch-norm) and the map after it. Generalised to any CNN from one hooked forward pass:

1. Record every leaf module call whose output is a spatial feature map (B, C, h, w) with h, w > 1, in
   execution order (squeeze-excitation gates and other 1x1 maps are ignored).
2. Group those calls into *stages* by spatial size (a stride or pooling step starts a new one). A
   stage is what the study calls a block.
3. In each stage take its last activation call (ReLU, ReLU6, SiLU, GELU, Hardswish, ...) as the
   *post-activation* map - preferring one that ends a block (its output is also an enclosing module's
   output) - and the last convolution or normalisation executed before it as the *pre-activation* map
   (when a BN follows a conv, the BN output, as in the study).
4. An activation module that is called several times (ResNet blocks reuse one ``relu``) cannot be
   hooked unambiguously, so the outermost enclosing module that returns exactly that tensor is named
   instead: ResNet's ``layer4`` (the stage output) rather than ``layer4.1.relu``.
5. Stages made only of the model's direct children (ResNet's stem ``conv1/bn1/relu``) are dropped
   when nested blocks exist; they are input processing, not a feature block.

Results, in forward order, pre before post:

* bundled Fashion-MNIST CNN: ``features.{0,1,2}.bn`` and ``features.{0,1,2}.relu`` (the six of seed 000);
* torchvision ResNet-18/34: ``layerN.1.bn2`` and ``layerN`` for N = 1..4 (ResNet-50: ``layerN.2.bn3``);
* VGG: the last conv (or BN, for ``vgg*_bn``) of each resolution and its ReLU;
* MobileNet V2/V3: per resolution, the last normalisation before an activation and that activation
  (for V2's last stage ``features.18.1`` and ``features.18.2``, the usual Grad-CAM layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from xaicli.errors import ModelError
from xaicli.models.layers import find_module, layer_layout

ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardtanh, nn.Softplus,
)
PRE_ACTIVATION: tuple[type[nn.Module], ...] = (
    nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm,
    nn.InstanceNorm2d, nn.LocalResponseNorm,
)

RESOLUTION_SETTERS: tuple[type[nn.Module], ...] = (
    nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Upsample, nn.PixelShuffle,
)


@dataclass(frozen=True)
class Candidate:
    name: str  # module name to hook (``model.named_modules()``)
    role: Literal["pre", "post"] | None  # before or after the block's activation (None: named by the user)
    stage: int  # 1-based block number in forward order (0: named by the user)
    shape: tuple[int, ...]  # (C, h, w) of its map for one input image (after the layout step)

    @property
    def label(self) -> str:
        """Row label for figures: name, then block, role and resolution."""
        h, w = self.shape[-2:]
        if self.role is None:
            return f"{self.name}\n{h}×{w}"
        return f"{self.name}\nblock {self.stage} {self.role}-act {h}×{w}"


@dataclass
class _Call:
    name: str
    module: nn.Module
    output: Tensor


def _record_calls(model: nn.Module, input_shape: tuple[int, ...]) -> list[_Call]:
    """Every module call of one forward pass on zeros, in completion order (leaves before containers)."""
    calls: list[_Call] = []
    handles = []

    def make(name: str):
        def hook(module: nn.Module, _inputs: tuple, output: object) -> None:
            if isinstance(output, Tensor):
                calls.append(_Call(name, module, output))

        return hook

    was_training = model.training
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make(name)))
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls


def _outermost_alias(call: _Call, calls: list[_Call]) -> str | None:
    """The outermost ancestor of ``call.name`` whose output is the very same tensor object."""
    ancestors = [c.name for c in calls if c.output is call.output and call.name.startswith(c.name + ".")]
    return min(ancestors, key=lambda n: n.count("."), default=None)


def _feature_calls(calls: list[_Call]) -> list[_Call]:
    """Leaf calls that output the current (B, C, h, w) feature map, h, w > 1.

    Convolutions, pooling and upsampling set the current resolution; another 4-D output whose last two
    sizes differ from it is a channels-last or gating tensor (ConvNeXt's permuted blocks, squeeze-
    excitation) and is skipped.
    """
    out, current = [], None
    for c in calls:
        if any(True for _ in c.module.children()) or c.output.dim() != 4:
            continue
        hw = tuple(c.output.shape[-2:])
        if isinstance(c.module, RESOLUTION_SETTERS):
            current = hw
        if hw == current and min(hw) > 1:
            out.append(c)
    return out


def layer_candidates(model: nn.Module, input_shape: tuple[int, ...]) -> list[Candidate]:
    """Pre- and post-activation feature maps of every feature block, in forward order (module docstring).

    ``input_shape`` is (C, H, W) of one input. The model's train/eval mode is restored afterwards.
    """
    calls = _record_calls(model, input_shape)
    n_calls: dict[str, int] = {}
    for c in calls:
        n_calls[c.name] = n_calls.get(c.name, 0) + 1

    def hookable(c: _Call) -> str | None:
        """The name under which this call's output can be hooked, if any."""
        return c.name if n_calls[c.name] == 1 else _outermost_alias(c, calls)

    stages: dict[tuple[int, int], list[_Call]] = {}  # resolution -> its calls, in order of first use
    for c in _feature_calls(calls):
        stages.setdefault(tuple(c.output.shape[-2:]), []).append(c)

    found: list[list[tuple[str, str, _Call]]] = []
    for stage in stages.values():
        acts = [i for i, c in enumerate(stage) if isinstance(c.module, ACTIVATIONS) and hookable(c)]
        if not acts:
            continue
        # prefer an activation that ends a block (its output is a container's output: ResNet's last relu)
        ends = [i for i in acts if _outermost_alias(stage[i], calls)]
        last = (ends or acts)[-1]
        post_call = stage[last]
        pair = []
        pre_call = next((c for c in reversed(stage[:last]) if isinstance(c.module, PRE_ACTIVATION)), None)
        if pre_call is not None and n_calls[pre_call.name] == 1:
            pair.append((pre_call.name, "pre", pre_call))
        pair.append((hookable(post_call), "post", post_call))
        found.append(pair)

    nested = [pair for pair in found if any("." in name for name, _, _ in pair)]
    if nested and len(nested) < len(found):  # drop stems made of the model's direct children
        found = nested
    out: list[Candidate] = []
    seen: set[str] = set()
    for number, pair in enumerate(found, start=1):
        for name, role, call in pair:
            if name not in seen:
                seen.add(name)
                out.append(Candidate(name, role, number, tuple(call.output.shape[1:])))
    return out


def resolve_layers(spec: str | list[str], model: nn.Module, input_shape: tuple[int, ...]) -> list[Candidate]:
    """``"auto"`` -> :func:`layer_candidates`; ``"a,b"`` or ``["a", "b"]`` -> those layers, checked.

    Raises :class:`~xaicli.errors.UnknownNameError` (with close matches) for a layer that does not
    exist, and :class:`~xaicli.errors.ModelError` when ``auto`` finds nothing.
    """
    if isinstance(spec, str) and spec.strip() == "auto":
        found = layer_candidates(model, input_shape)
        if not found:
            raise ModelError("--layers auto found no conv/activation feature maps in this model; name the "
                             "layers with --layers L1,L2 (see `xaicli layers`)")
        return found
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if not names:
        raise ModelError("--layers needs 'auto' or a comma-separated list of layer names")
    for i, name in enumerate(names):
        find_module(model, name, key=f"--layers[{i}]")
    shapes = {c.name: tuple(c.output.shape[1:]) for c in _record_calls(model, input_shape)}
    out = []
    for name in dict.fromkeys(names):
        shape = shapes.get(name)
        if shape is None:
            raise ModelError(f"layer {name!r} does not output a tensor in the forward pass; pick a layer "
                             "from `xaicli layers`")
        # token and channels-last layers too (the layout step reads them as (C, h, w) maps)
        layout = layer_layout(model, name, shape, tuple(input_shape[-2:]))
        out.append(Candidate(name, None, 0, layout.nchw_shape(shape)))
    return out
