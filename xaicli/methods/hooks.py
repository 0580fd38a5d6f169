"""All hook and model-state handling lives here, so attribution code never touches hooks directly.

Every context manager restores what it changed in ``finally``: hooks never outlive a call, also when
the forward or backward pass raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from xaicli.errors import ModelError
from xaicli.models.layers import find_module


@contextmanager
def inference_state(model: nn.Module) -> Iterator[None]:
    """Eval mode and parameters frozen for the duration of an attribution call.

    Freezing parameters means the autograd graph only exists where an attribution needs it (from the
    hooked activation or the input up to the logits): no parameter gradients are computed and nothing
    below a CAM target layer is back-propagated. Both are restored afterwards, even on error.
    """
    modes = [(m, m.training) for m in model.modules()]  # per module: mixed train/eval states survive
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


@contextmanager
def capture_activations(
    model: nn.Module, layer_names: Sequence[str], *, differentiable: bool = True
) -> Iterator[dict[str, Tensor]]:
    """Record the output of each named layer during forward passes inside the ``with`` block.

    With ``differentiable`` the first hooked layer's output becomes a fresh autograd leaf (parameters
    are frozen by :func:`inference_state`, so no graph exists below it) and the model always continues
    from a clone of the recorded tensor. Two things follow: ``torch.autograd.grad(score, acts[name])``
    back-propagates only from the score down to the hooked layers, and an in-place op after a layer
    (``ReLU(inplace=True)``, ``out += identity``) modifies the clone, never the recorded activation.
    A module called several times (a shared ReLU) records its last call.
    """
    acts: dict[str, Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor | None:
            if not isinstance(output, Tensor):
                kind = type(output).__name__
                raise ModelError(f"layer {name!r} returns {kind}, not a tensor; pick a layer whose output "
                                 "is a feature map (see `xaicli layers`)")
            if differentiable:
                # the first hooked layer starts the graph (nothing below it needs gradients); a later
                # one is already inside it and is recorded as is, so gradients reach both
                start = output if output.requires_grad else output.detach().requires_grad_(True)
                acts[name] = start
                return start.clone()
            acts[name] = output.detach().clone()
            return None

        return hook

    try:
        for name in layer_names:
            module = find_module(model, name)
            try:
                handles.append(module.register_forward_hook(make_hook(name)))
            except (RuntimeError, AttributeError) as err:  # TorchScript submodules refuse new hooks
                raise ModelError(f"cannot hook layer {name!r} of this model ({err}); layer methods need an "
                                 "eager nn.Module (TorchScript models support pixel methods only)") from err
        yield acts
    finally:
        for h in handles:
            h.remove()


def grad_enabled_forward(model: nn.Module, x: Tensor) -> Tensor:
    """Forward pass with autograd on (attribution calls may come from inside ``torch.no_grad()``)."""
    with torch.enable_grad():
        return model(x)


@contextmanager
def replace_output(model: nn.Module, layer_name: str, fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Inside the ``with`` block, every call of the layer ``layer_name`` returns ``fn(output)`` instead of
    its output (Ablation-CAM's ablated activations). ``fn`` may change the batch size: the model then
    continues with ``fn``'s rows."""
    module = find_module(model, layer_name)

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor:
        return fn(output)

    try:
        handle = module.register_forward_hook(hook)
    except (RuntimeError, AttributeError) as err:  # TorchScript submodules refuse new hooks
        raise ModelError(f"cannot hook layer {layer_name!r} of this model ({err}); layer methods need an "
                         "eager nn.Module") from err
    try:
        yield
    finally:
        handle.remove()
