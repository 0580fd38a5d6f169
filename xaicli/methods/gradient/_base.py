"""Shared machinery of the pixel-attribution methods (gradients with respect to the input).

Every pixel method computes raw per-target attributions ``a`` of shape (B, K, C, H, W) in
:meth:`PixelMethod.raw` and shares one post-processing path (:meth:`PixelMethod.postprocess`):

1. ``reduce`` the channels, (B, K, C, H, W) -> (B, K, H, W):
   ``abs_max`` ``max_c |a_c|`` (default; Simonyan et al. 2014), ``abs_sum`` ``sum_c |a_c|`` (seed 002's
   ``sum(abs(.), 3)``), ``l2`` ``sqrt(sum_c a_c^2)``, ``sum`` ``sum_c a_c`` (signed);
2. ``percentile_clip`` (default 99.5; 100 = off): values whose magnitude exceeds the p-th percentile of
   ``|map|`` of their own map are clipped to it (nearest-rank percentile), so a few extreme pixels do not
   flatten the rest of the map;
3. ``normalise`` (default true): unsigned reductions are min-max normalised to [0, 1]; ``sum`` is
   divided by its largest magnitude so it lies in [-1, 1] with 0 kept at 0 (see :meth:`signed`).

Gradients are batched: for each target rank k one backward pass from the sum over the batch of the chosen
logits ``sum_b y_b^{c_bk}`` gives every image its own gradient at once (image b's logit depends only on
image b in eval mode). The model runs under :func:`~xaicli.methods.hooks.inference_state` (eval mode,
parameters frozen, restored afterwards) and ``torch.enable_grad()`` (callers may be in ``no_grad``).
Everything stays on the input's device.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from xaicli.methods.base import Call, Explanation, InputRange, Method, Option, TargetSpec, resolve_targets
from xaicli.methods.gradient._relu_rules import Rule, relu_rules
from xaicli.methods.hooks import inference_state
from xaicli.methods.input_space import gaussian_blur, input_bounds
from xaicli.methods.postprocess import clip_percentile, normalise_map

REDUCTIONS = ("abs_max", "abs_sum", "sum", "l2")

PIXEL_OPTIONS: dict[str, Option] = {
    "reduce": Option("abs_max", "how the colour channels become one map: abs_max (Simonyan et al.), abs_sum "
                     "(seed 002), l2, or sum (signed, shown with a diverging colormap)", choices=REDUCTIONS),
    "percentile_clip": Option(99.5, "clip each map at this percentile of |map| before normalising "
                              "(100 = no clipping)", minimum=0.0, maximum=100),
    "normalise": Option(True, "scale each map to [0, 1] ([-1, 1] for reduce: sum); "
                        "false = raw reduced values"),
}


@dataclass
class Attribution:
    """Raw attributions before reduction: (B, K, C, H, W) per key (``None`` = the input itself)."""

    maps: dict[str | None, Tensor]
    targets: Tensor  # (B, K)
    logits: Tensor  # (B, N), clean forward pass on the explained input
    extras: dict[str, Tensor] = field(default_factory=dict)


class PixelMethod(Method):
    """Base of the pixel methods: subclasses implement :meth:`raw`; reduction is shared.

    ``call.input_range`` (see :class:`~xaicli.methods.base.Call`) sets the ``black`` / ``uniform`` IG
    baselines and the SmoothGrad noise scale; without it, black is all zeros and the range is each
    image's own per-channel min..max.
    """

    family = "pixel"
    signed = True  # reduce: sum
    options = PIXEL_OPTIONS

    def is_signed(self) -> bool:
        """Whether maps carry a sign (values in [-1, 1]; render with a diverging colormap)."""
        return self.opts["reduce"] == "sum"

    def attribute(self, x: Tensor, targets: TargetSpec, call: Call | None = None) -> Attribution:
        """Raw (B, K, C, H, W) attributions of ``x`` (B, C, H, W) for the requested targets, before
        reduction (what SmoothGrad averages; ``call`` defaults to :meth:`make_call`'s)."""
        return self.raw(x, targets, call or self.make_call())

    @abstractmethod
    def raw(self, x: Tensor, targets: TargetSpec, call: Call) -> Attribution:
        """:meth:`attribute` with the call settings resolved: what each pixel method implements."""

    def compute(self, x: Tensor, targets: TargetSpec, call: Call) -> Explanation:
        raw = self.raw(x, targets, call)
        maps = {key: self.postprocess(a) for key, a in raw.maps.items()}
        return Explanation(maps=maps, targets=raw.targets, logits=raw.logits.detach(), extras=raw.extras)

    def postprocess(self, attr: Tensor) -> Tensor:
        """(B, K, C, H, W) raw attributions -> (B, K, H, W) float32 maps, reduced/clipped/normalised."""
        maps = reduce_channels(attr.float(), self.opts["reduce"])
        maps = clip_percentile(maps, self.opts["percentile_clip"])
        if not self.opts["normalise"]:
            return maps
        return normalise_map(maps, signed=self.is_signed())


def reduce_channels(attr: Tensor, how: str) -> Tensor:
    """(B, K, C, H, W) -> (B, K, H, W) by one of :data:`REDUCTIONS`."""
    if how == "abs_max":
        return attr.abs().amax(dim=2)
    if how == "abs_sum":
        return attr.abs().sum(dim=2)
    if how == "sum":
        return attr.sum(dim=2)
    if how == "l2":
        return attr.pow(2).sum(dim=2).sqrt()
    raise ValueError(f"unknown reduction {how!r}; expected one of {REDUCTIONS}")


def input_gradients(
    model: nn.Module, x: Tensor, targets: TargetSpec, rule: Rule | None = None, functional_relu: bool = False
) -> Attribution:
    """d y^c / d x for every target rank, optionally with a modified ReLU backward ``rule`` (applied to
    ``nn.ReLU`` modules, and with ``functional_relu`` to the functional ReLUs too; see ``_relu_rules``).

    One forward pass of the whole batch, then one backward pass per target rank (see module docstring).
    Returns (B, K, C, H, W) gradients under key ``None``.
    """
    leaf = x.detach().requires_grad_(True)
    rules = relu_rules(model, rule, functional=functional_relu) if rule is not None else nullcontext()
    with inference_state(model), torch.enable_grad(), rules as stats:
        logits = model(leaf)  # (B, N)
        tgt = resolve_targets(logits, targets)  # (B, K)
        grads = []
        for k in range(tgt.shape[1]):
            score = logits.gather(1, tgt[:, k : k + 1]).sum()
            (g,) = torch.autograd.grad(score, leaf, retain_graph=k < tgt.shape[1] - 1)
            grads.append(g)
    if stats is not None and stats.calls == 0:
        where = "ReLU" if functional_relu else "nn.ReLU module (functional ReLUs need functional_relu=True)"
        warnings.warn(f"the {rule} ReLU rule found no {where} in this model (ReLU6/SiLU/GELU... keep their "
                      "ordinary gradient): the result is the plain input gradient", stacklevel=3)
    return Attribution(maps={None: torch.stack(grads, dim=1)}, targets=tgt, logits=logits.detach())


def row_chunks(rows: int, size: int, device: torch.device) -> Iterator[tuple[range, Tensor]]:
    """Consecutive chunks of at most ``size`` rows covering ``range(rows)``: (host range, device indices)."""
    for start in range(0, rows, size):
        stop = min(start + size, rows)
        yield range(start, stop), torch.arange(start, stop, device=device)


BASELINES = ("black", "zeros", "blur", "uniform")
"""Reference inputs of the baseline methods (integrated gradients, DeepLift): see :func:`reference_input`."""

BASELINE_HELP = ("reference input: black (raw 0 after normalisation), zeros (normalised 0), blur "
                 "(Gaussian-blurred input) or uniform (seeded noise)")


def reference_input(kind: str, x: Tensor, input_range: InputRange | None, blur_sigma: float = 5.0,
                    seed: int = 0) -> Tensor:
    """The baseline x' (B, C, H, W) of ``x`` for one of :data:`BASELINES`.

    ``black`` is a raw black image after the model's normalisation, i.e. ``input_range[0]`` per channel
    (all zeros when ``input_range`` is unknown); ``zeros`` the all-zero *normalised* input (the dataset
    mean colour under mean/std normalisation); ``blur`` the input blurred with a Gaussian of
    ``blur_sigma`` pixels; ``uniform`` uniform noise in the input range from ``seed``, one (C, H, W) draw
    shared by every image, so an image's baseline does not depend on the batch it came in.
    """
    if kind == "zeros":
        return torch.zeros_like(x)
    if kind == "black":
        if input_range is None:
            return torch.zeros_like(x)
        return input_bounds(x, input_range)[0].expand_as(x).clone()
    if kind == "blur":
        return gaussian_blur(x, blur_sigma)
    if kind != "uniform":
        raise ValueError(f"unknown baseline {kind!r}; expected one of {BASELINES}")
    lo, hi = input_bounds(x, input_range)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    u = torch.rand((1, *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)  # (1, C, H, W)
    return (lo + u * (hi - lo)).expand_as(x)
