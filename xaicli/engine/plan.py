"""Turn a validated config + loaded model into concrete work: method instances with checked layers,
and the target specification. Everything that needs the model to validate is checked here, before
any image is read, so config mistakes fail fast with exit code 2; what is ignored or capped is said in
a one-line notice (``notices``), never silently."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xaicli.config import Config
from xaicli.engine.results import Slot
from xaicli.errors import ConfigError, ModelError, UnknownNameError
from xaicli.methods import Method, TopK, create_method, get_method
from xaicli.methods.base import TargetSpec
from xaicli.models.layers import default_layer, describe_layers, find_module, negative_fractions
from xaicli.models.loader import LoadedModel


class PlanWarning(UserWarning):
    """A config that runs but probably does not do what the user wants (see the message)."""


@dataclass
class PlannedMethod:
    name: str
    method: Method
    layers: list[str | None]  # output keys of its maps (None: the input itself)
    options: dict  # resolved options, for the manifest / run.json


def plan_methods(cfg: Config, loaded: LoadedModel, notices: list[str] | None = None) -> list[PlannedMethod]:
    """The methods of ``cfg`` with their layers checked against the model. Layers given to a method that
    explains the input (``-l`` applies to every method) are ignored with a notice."""
    notices = [] if notices is None else notices
    planned = []
    for i, mc in enumerate(cfg.methods):
        key = f"methods[{i}]"
        cls = get_method(mc.name, key=f"{key}.name")
        layers = list(mc.layers)
        if layers and not cls.needs_layer:
            notices.append(f"{mc.name} explains the input and takes no layer: layers {', '.join(layers)} "
                           f"ignored for it ({key})")
            layers = []
        if cls.needs_layer and not layers:
            layer = loaded.default_layer or default_layer(loaded.model, loaded.input_shape)
            if layer is None:
                raise ConfigError(f"{key}.layers", f"{mc.name} needs a layer and none could be chosen "
                                  "automatically; list them with `xaicli layers -c CONFIG`")
            layers = [layer]
        for j, layer in enumerate(layers):
            find_module(loaded.model, layer, key=f"{key}.layers[{j}]")
        if cls.needs_layer:
            _check_feature_maps(loaded, layers, key)
        method = create_method(mc.name, loaded.model, layers, mc.options, key=key)
        planned.append(PlannedMethod(mc.name, method, list(layers) if cls.needs_layer else [None],
                                     method.opts))
    _check_gradients(loaded, [pm.name for pm in planned if pm.method.uses_gradients])
    return planned


def _check_gradients(loaded: LoadedModel, names: list[str]) -> None:
    """Gradient methods need the output to depend on the input through autograd: refuse a model whose
    forward detaches it (``.detach()``, ``torch.no_grad()``, NumPy) now, with one line, not mid-run."""
    if not names:
        return
    param = next(loaded.model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros((1, *loaded.input_shape), device=device, requires_grad=True)
    with torch.enable_grad():
        out = loaded.model(x)
    if isinstance(out, torch.Tensor) and not out.requires_grad:
        raise ModelError(f"{', '.join(names)} need{'s' if len(names) == 1 else ''} gradients, but the "
                         "model's output is detached from its input (its forward uses .detach(), "
                         "torch.no_grad() or non-torch code); use scorecam, which needs no gradients, or fix "
                         "the model")


def _check_feature_maps(loaded: LoadedModel, layers: list[str], key: str) -> None:
    """Layer methods need a (C, h, w) feature map: refuse e.g. a Linear layer now, not mid-run."""
    infos = {i.name: i for i in describe_layers(loaded.model, loaded.input_shape, names=layers)}
    for j, name in enumerate(layers):
        info = infos[name]
        if not info.hooked:  # inside a compiled TorchScript call: the method gives the precise error
            continue
        if info.order < 0:
            raise ConfigError(f"{key}.layers[{j}]", f"layer {name!r} is not called by the model's forward "
                              "pass; pick another with `xaicli layers -c CONFIG`")
        shape = info.shape
        if shape is None or len(shape) != 3:
            what = "a non-tensor" if shape is None else f"shape {tuple(shape)}"
            raise ConfigError(f"{key}.layers[{j}]", f"layer {name!r} outputs {what} per image, not a "
                              "(C, H, W) feature map; pick a convolutional layer (`xaicli layers -c CONFIG`)")


def plan_targets(cfg: Config, classes: list[str], notices: list[str] | None = None
                 ) -> tuple[TargetSpec | None, list[Slot]]:
    """The target spec and the slots each image gets: top-1..., fixed classes, then the true class
    (``targets.true_class``; always the last slot, resolved per image by the caller, which is why the
    spec covers the other slots only and is None when the true class is the only target). A top-k larger
    than the number of classes is capped (with a notice); a class given twice is refused."""
    notices = [] if notices is None else notices
    t = cfg.targets
    true = [Slot("true")] if t.true_class else []
    if t.classes is None:
        if t.topk is None and true:
            return None, true
        k = min(t.topk or 1, len(classes))
        if (t.topk or 1) > k:
            notices.append(f"targets.topk: top-{t.topk} asked for, but the model has {len(classes)} classes: "
                           f"explaining the top-{k}")
        return TopK(k), [Slot("top", r) for r in range(1, k + 1)] + true
    idx: list[int] = []
    for i, c in enumerate(t.classes):
        key = f"targets.classes[{i}]"
        if isinstance(c, int):
            if not 0 <= c < len(classes):
                raise ConfigError(key, f"class index {c} out of range 0..{len(classes) - 1}")
            idx.append(c)
        elif c in classes:
            idx.append(classes.index(c))
        else:
            raise UnknownNameError("class", c, classes, key=key)
        if idx[-1] in idx[:-1]:
            first = idx.index(idx[-1])
            raise ConfigError(key, f"class {classes[idx[-1]]!r} (index {idx[-1]}) is listed twice "
                              f"(also targets.classes[{first}]); list each class once")
    return torch.tensor(idx, dtype=torch.long)[None], [Slot("class", c) for c in idx] + true


MOSTLY_NEGATIVE = 0.5
"""A layer whose probe activations are more than this share negative is 'mostly negative'."""


def activation_sign_warnings(planned: list[PlannedMethod], loaded: LoadedModel,
                             device: torch.device) -> list[str]:
    """Warnings for methods that assume non-negative activations (``nonnegative_activations``: Grad-CAM++,
    Score-CAM) pointed at layers whose activations on a probe input are mostly negative - typically a
    batch norm before its ReLU, where Score-CAM gives background-only or all-zero maps and Grad-CAM++'s
    alphas are ill-conditioned. The probe: 4 seeded uniform images in [0, 1], normalised as the model's
    inputs; the warning names the block's post-activation layer when there is one."""
    wanted = {layer for pm in planned if pm.method.nonnegative_activations for layer in pm.layers if layer}
    if not wanted:
        return []
    gen = torch.Generator().manual_seed(0)
    c = loaded.input_shape[0]
    images = torch.rand((4, *loaded.input_shape), generator=gen)
    mean = torch.tensor(loaded.mean * (c if len(loaded.mean) == 1 else 1)).view(1, c, 1, 1)
    std = torch.tensor(loaded.std * (c if len(loaded.std) == 1 else 1)).view(1, c, 1, 1)
    fractions = negative_fractions(loaded.model, sorted(wanted), ((images - mean) / std).to(device))
    out = []
    for pm in planned:
        if not pm.method.nonnegative_activations:
            continue
        for layer in pm.layers:
            share = fractions.get(layer or "", 0.0)
            if share > MOSTLY_NEGATIVE:
                after = _post_activation(loaded, layer)
                hint = f"; use the layer after the activation, e.g. {after!r}" if after else ""
                out.append(f"{pm.name} at {layer!r}: {share:.0%} of the layer's activations on a probe input "
                           f"are negative (a pre-activation layer?), but {pm.name} assumes non-negative "
                           f"activations and can give background-only, all-zero or ill-conditioned maps "
                           f"there{hint} (compare layers with `xaicli sweep --metric insertion`)")
    return out


def _post_activation(loaded: LoadedModel, layer: str | None) -> str | None:
    """The post-activation candidate of the block whose pre-activation candidate is ``layer``, if any."""
    from xaicli.models.candidates import layer_candidates

    try:
        cands = layer_candidates(loaded.model, loaded.input_shape)
    except Exception:  # the hint is optional: any model the candidate finder cannot read gets none
        return None
    stage = next((c.stage for c in cands if c.name == layer and c.role == "pre"), None)
    return next((c.name for c in cands if c.stage == stage and c.role == "post"), None)
