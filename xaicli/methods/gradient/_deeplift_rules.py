"""DeepLIFT's Rescale rule as backward rules, active for one call only (Shrikumar et al. 2017, sec. 3.5.1).

DeepLIFT runs the model once on the input ``x`` and the baseline ``x'`` stacked into one batch of 2B rows,
``[x; x']``: every layer then sees each image's input half and reference half in the same tensor, so a
rule needs nothing but the tensors at hand. Linear layers (convolutions, batch norms in eval mode, linear
layers, average pooling, additions) keep their gradient, which is already their DeepLIFT multiplier.
Each nonlinearity ``y = f(z)`` replaces its local derivative by the ratio of differences between the two
halves (the gradient formulation of Ancona et al., ICLR 2018)::

    elementwise (Rescale)   dL/dz = dL/dy * (f(z) - f(z')) / (z - z')       where |z - z'| >= eps
                            dL/dz = dL/dy * f'(z)                           where |z - z'| <  eps
    max pooling             dL/dz = [P_z(dL/dy * (m - y')) + P_z'(dL/dy * (y - m))] / (z - z')
                            with m = max(y, y'), and the same eps fall-back

with ``P_z(v)`` the ordinary max-pooling backward of ``v`` at ``z`` (routed to each window's argmax and
summed where windows overlap); this is Captum's max-pooling rule (its ``max_unpool`` keeps one of two
overlapping windows where both pick the same maximum; the sum here is the chain rule's). Only the
input half receives a gradient (the reference half receives zeros). With every nonlinearity covered the
attributions ``(x - x') * dL/dx`` sum to ``f(x) - f(x')`` exactly ("summation-to-delta", eq. 1).

Covered, through the module's own ``forward`` (so their parameters - PReLU's slopes, ELU's alpha - are
whatever the module uses; modules of a TorchScript model loaded by xaicli are recognised by the class
they were compiled from, :mod:`xaicli.methods.modules`):

* every elementwise activation module of ``torch.nn`` (:data:`ELEMENTWISE`): ReLU, ReLU6, LeakyReLU,
  PReLU, RReLU, ELU, SELU, CELU, GELU, SiLU, Mish, Sigmoid, Tanh, Softplus, Softsign, Hardtanh,
  Hardsigmoid, Hardswish, LogSigmoid, Tanhshrink, Softshrink, Hardshrink, Threshold. Captum's DeepLift
  covers ReLU, ELU, LeakyReLU, Sigmoid, Tanh and Softplus and leaves the others (GELU, SiLU, ...) with
  their ordinary gradient;
* max pooling modules (:data:`MAX_POOLING`): MaxPool1d/2d/3d and AdaptiveMaxPool1d/2d/3d;
* with ``functional=True`` the functional ReLUs (``torch.relu``, ``F.relu``, ``Tensor.relu`` and their
  in-place forms, as the guided-backprop rule; torchvision's DenseNet and Inception need it).

Not covered (a warning names them; :func:`uncovered_modules`): softmax-like and other non-elementwise
modules (Softmax, LogSoftmax, GLU, MultiheadAttention, ...), LPPool and fractional max pooling, and
functional calls other than the ReLUs (``F.gelu``, ``torch.sigmoid``, ``F.max_pool2d`` in a ``forward``).
They keep their ordinary gradient, and summation-to-delta then fails by however much they matter: the
method reports the gap per image and target (``deeplift_delta``). Unlike Captum's hooks, which raise
when a module runs twice in one forward pass (torchvision's ResNet blocks reuse their ReLU), a rule here
is per call, so reused modules are fine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from xaicli.methods.gradient._relu_rules import RuleStats, functional_relu_replacements, swapped_forwards
from xaicli.methods.modules import is_a, layer_attr, nn_class, script_of

ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish,
    nn.LogSigmoid, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold,
)
"""Activation modules applied element by element: the Rescale rule covers them."""

MAX_POOLING: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
"""Max-pooling modules: the max-pooling rule covers them."""

_RELU = torch.relu  # bound at import: the name ``torch.relu`` itself is replaced while functional rules run


@functools.cache
def _nonlinear_module_types() -> tuple[type[nn.Module], ...]:
    """Every activation module class of ``torch.nn`` and every pooling that is not linear."""
    import torch.nn.modules.activation as activation
    import torch.nn.modules.pooling as pooling

    found = [c for c in vars(activation).values()
             if isinstance(c, type) and issubclass(c, nn.Module) and c.__module__ == activation.__name__]
    found += [c for c in vars(pooling).values() if isinstance(c, type) and issubclass(c, nn.Module)
              and c.__module__ == pooling.__name__ and "Avg" not in c.__name__ and "Unpool" not in c.__name__]
    return tuple(c for c in found if not c.__name__.startswith("_"))


def uncovered_modules(model: nn.Module) -> list[str]:
    """Class names of the nonlinear modules of ``model`` that no rule covers (ordinary gradient)."""
    nonlinear, covered = _nonlinear_module_types(), ELEMENTWISE + MAX_POOLING
    return sorted({nn_class(m).__name__ for m in model.modules()
                   if is_a(m, nonlinear) and not is_a(m, covered)})


def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    half = t.shape[0] // 2
    return t[:half], t[half:]


def _vjp(fn: Callable[[Tensor], Tensor], at: Tensor, v: Tensor) -> Tensor:
    """``v^T d fn / d z`` at ``z = at``: the ordinary backward pass of ``fn``."""
    with torch.enable_grad():
        z = at.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(z), z, v)
    return g


def _run(ctx: Any, z: Tensor, fn: Callable[[Tensor], Tensor], inplace: bool | None) -> Tensor:
    """Forward of a rule: ``fn(z)``, written into ``z`` for in-place callers (``inplace`` None: unknown,
    as for a traced module; ``fn`` then runs on a copy and a new tensor is returned)."""
    out = fn(z if inplace is False else z.clone())
    if inplace:
        z.copy_(out)
        ctx.mark_dirty(z)
        return z
    return out


class _Rescale(torch.autograd.Function):
    """Elementwise ``fn`` on a [x; x'] batch; backward: the Rescale multiplier (module docstring)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, fn: Callable[[Tensor], Tensor], eps: float,
                inplace: bool | None) -> Tensor:
        zx, zr = _halves(z)
        ctx.fn, ctx.eps = fn, eps
        dz = zx - zr  # (B, ...)
        out = _run(ctx, z, fn, inplace)
        yx, yr = _halves(out)
        ctx.save_for_backward(zx.clone() if inplace else zx, dz, yx - yr)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        zx, dz, dy = ctx.saved_tensors
        gx = _halves(grad)[0]
        small = dz.abs() < ctx.eps
        rescaled = gx * dy / torch.where(small, torch.ones_like(dz), dz)
        plain = _vjp(ctx.fn, zx, gx)  # f'(z) dL/dy, where the two halves (nearly) agree
        return torch.cat([torch.where(small, plain, rescaled), torch.zeros_like(gx)]), None, None, None


class _MaxPoolRule(torch.autograd.Function):
    """A max pooling ``fn`` on a [x; x'] batch; backward: Captum's DeepLift max-pooling rule."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, fn: Callable[[Tensor], Tensor], eps: float) -> Tensor:
        out = fn(z)
        ctx.fn, ctx.eps = fn, eps
        ctx.save_for_backward(z, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        z, out = ctx.saved_tensors
        zx, zr = _halves(z)
        yx, yr = _halves(out)
        gx = _halves(grad)[0]
        top = torch.maximum(yx, yr)
        routed = _vjp(ctx.fn, zx, gx * (top - yr)) + _vjp(ctx.fn, zr, gx * (yx - top))  # (B, ...) at z
        dz = zx - zr
        small = dz.abs() < ctx.eps
        rule = torch.where(small, _vjp(ctx.fn, zx, gx), routed / torch.where(small, torch.ones_like(dz), dz))
        return torch.cat([rule, torch.zeros_like(rule)]), None, None


@contextmanager
def rescale_rules(model: nn.Module, eps: float = 1e-10, functional: bool = False,
                  max_pooling_rule: bool = True) -> Iterator[RuleStats]:
    """DeepLIFT rules on every covered module of ``model`` (and with ``functional`` on the functional
    ReLUs) inside the block; the model must be called on [x; x'] batches (an even number of rows).
    Without ``max_pooling_rule`` max pooling keeps its ordinary gradient."""
    stats = RuleStats()

    def elementwise(fn: Callable[[Tensor], Tensor], inplace: bool | None) -> Callable[[Tensor], Tensor]:
        def forward(z: Tensor) -> Tensor:
            stats.calls += 1
            return _Rescale.apply(z, fn, eps, inplace)
        return forward

    def max_pooling(fn: Callable[[Tensor], Tensor]) -> Callable[..., Tensor]:
        def forward(z: Tensor) -> Tensor | tuple[Tensor, Tensor]:
            stats.calls += 1
            return _MaxPoolRule.apply(z, fn, eps)
        return forward

    def module_forward(module: nn.Module) -> Callable | None:
        if is_a(module, ELEMENTWISE):
            # nn.ReLU's own forward calls F.relu, which the functional rules replace: use the original
            fn = _RELU if nn_class(module) is nn.ReLU else module.forward
            inplace = layer_attr(module, "inplace", None if script_of(module) is not None else False)
            return elementwise(fn, None if inplace is None else bool(inplace))
        pools = max_pooling_rule and is_a(module, MAX_POOLING)
        if pools and not layer_attr(module, "return_indices", False):
            return max_pooling(module.forward)
        return None

    def apply_relu(z: Tensor, inplace: bool) -> Tensor:
        return elementwise(_RELU, inplace)(z)

    functions = functional_relu_replacements(apply_relu) if functional else None
    with swapped_forwards(model, module_forward, functions):
        yield stats
