"""Modified ReLU backward rules for guided backpropagation and deconvnet, active for one call only.

Both rules keep the forward pass (``max(x, 0)``) and change only what flows back through a ReLU, with
``X`` the ReLU input and ``dL/dZ`` the gradient arriving at its output (seed 002)::

    ordinary ReLU     dL/dX = (X > 0) * dL/dZ
    guided backprop   dL/dX = (X > 0) * (dL/dZ > 0) * dL/dZ      (Springenberg et al. 2015)
    deconvnet         dL/dX =           (dL/dZ > 0) * dL/dZ      (Zeiler & Fergus 2014)

:func:`relu_rules` installs the rule, as a custom :class:`torch.autograd.Function`, in two places:

* every ``nn.ReLU`` module (``inplace=True`` included): its ``forward`` is replaced on the instance, so
  the module object, its name and any hooks on it stay as they are (a CAM layer can still be hooked);
* with ``functional=True``, the functional entry points ``torch.relu``, ``torch.relu_``, ``F.relu``,
  ``F.relu_`` and the tensor methods ``Tensor.relu`` / ``Tensor.relu_`` (torchvision DenseNet and
  Inception call ``F.relu`` in ``forward``). Captum overrides ``nn.ReLU`` modules only. Patching them
  is process-wide for the duration of the call, so it is opt-in: the CLI, which owns its process, turns
  it on; a library caller passes ``functional_relu=True`` to ``explain`` when its model needs it and no
  other thread runs a model meanwhile.

Everything is restored in ``finally``, also when the forward or backward pass raises.

Not covered, deliberately: ReLU6, LeakyReLU, SiLU, Hardswish, GELU and ``torch.clamp(x, min=0)`` keep
their ordinary gradient, as in Captum (the rules are defined for ReLU; MobileNet/EfficientNet-style
activations have none in the papers). On such models the result drifts towards the vanilla gradient;
:attr:`RuleStats.calls` counts the ReLUs that went through a rule so callers can warn when it is zero.
A name bound at import time (``from torch.nn.functional import relu``) and TorchScript code are out of
reach of the functional patch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Rule = Literal["guided", "deconvnet"]


class _GatedReLU(torch.autograd.Function):
    """``max(x, 0)`` forward; backward gated by the incoming gradient's sign (and ``x > 0`` if guided)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, guided: bool) -> Tensor:
        out = x.clamp_min(0)
        ctx.guided = guided
        ctx.save_for_backward(out)  # out > 0  <=>  x > 0
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:
        (out,) = ctx.saved_tensors
        grad = grad_out.clamp_min(0)  # (dL/dZ > 0) * dL/dZ
        if ctx.guided:
            grad = grad * (out > 0)  # (X > 0) * ...
        return grad, None


class _GatedReLUInplace(torch.autograd.Function):
    """In-place twin of :class:`_GatedReLU` for ``inplace=True`` / ``relu_`` callers."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, guided: bool) -> Tensor:
        ctx.mark_dirty(x)
        x.clamp_min_(0)
        ctx.guided = guided
        ctx.save_for_backward(x)
        return x

    backward = _GatedReLU.backward


@dataclass
class RuleStats:
    """How many ReLU applications went through the rule while it was installed."""

    calls: int = 0


PATCHED_FUNCTIONS: tuple[tuple[object, str], ...] = (
    (torch, "relu"), (torch, "relu_"), (F, "relu"), (F, "relu_"),
    (torch.Tensor, "relu"), (torch.Tensor, "relu_"),
)
"""The functional entry points replaced while a rule is installed, as (owner, attribute name)."""


def functional_relu_replacements(
    apply: Callable[[Tensor, bool], Tensor],
) -> dict[tuple[object, str], Callable]:
    """Stand-ins for every entry point of :data:`PATCHED_FUNCTIONS`, each calling ``apply(x, inplace)``."""
    return {
        (torch, "relu"): lambda input: apply(input, False),
        (torch, "relu_"): lambda input: apply(input, True),
        (F, "relu"): lambda input, inplace=False: apply(input, inplace),
        (F, "relu_"): lambda input: apply(input, True),
        (torch.Tensor, "relu"): lambda self: apply(self, False),
        (torch.Tensor, "relu_"): lambda self: apply(self, True),
    }


@contextmanager
def swapped_forwards(model: nn.Module, module_forward: Callable[[nn.Module], Callable | None],
                     functions: Mapping[tuple[object, str], Callable] | None = None) -> Iterator[None]:
    """Inside the block, every module ``m`` of ``model`` for which ``module_forward(m)`` is not None runs
    that function as its ``forward`` (set on the instance: the module object, its name and its hooks stay),
    and each ``(owner, name)`` of ``functions`` is replaced process-wide. Everything is restored in
    ``finally``, in reverse order, also when the block raises. The machinery of every backward-rule
    method (guided backprop, deconvnet, DeepLift)."""
    # (owner, name, had its own attribute, original) - restored in reverse order
    saved: list[tuple[object, str, bool, object]] = []
    try:
        for module in model.modules():
            forward = module_forward(module)
            if forward is not None:
                own = "forward" in module.__dict__
                saved.append((module, "forward", own, module.__dict__.get("forward")))
                module.forward = forward
        for (owner, name), replacement in (functions or {}).items():
            own = name in vars(owner)
            saved.append((owner, name, own, vars(owner).get(name)))
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, own, original in reversed(saved):
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)


@contextmanager
def relu_rules(model: nn.Module, rule: Rule, functional: bool = False) -> Iterator[RuleStats]:
    """Route every ReLU module of ``model`` (and with ``functional`` every functional ReLU call) through
    ``rule`` inside the block."""
    guided = rule == "guided"
    stats = RuleStats()

    def apply(x: Tensor, inplace: bool = False) -> Tensor:
        stats.calls += 1
        return (_GatedReLUInplace if inplace else _GatedReLU).apply(x, guided)

    def module_forward(module: nn.Module) -> Callable | None:
        if not isinstance(module, nn.ReLU):
            return None
        return lambda x, inplace=module.inplace: apply(x, inplace)

    functions = functional_relu_replacements(apply) if functional else None
    with swapped_forwards(model, module_forward, functions):
        yield stats
