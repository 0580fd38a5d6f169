"""Integrated gradients (Sundararajan, Taly & Yan, ICML 2017, arXiv:1703.01365).

IG_i(x) = (x_i - x'_i) * int_0^1 d y^c(x' + a (x - x')) / d x_i  da          (eq. 1)
        ~ (x_i - x'_i) * sum_s w_s  d y^c(x' + a_s (x - x')) / d x_i          (sec. "Computing IG")

with baseline x'. Completeness (prop. 1): ``sum_i IG_i = y^c(x) - y^c(x')``; the quadrature error
``sum_i IG_i - (y^c(x) - y^c(x'))`` is returned per image and target as ``extras["ig_delta"]`` (the paper
suggests 20-300 steps, enough to bring it within 5 %).

Quadrature (``method``): ``riemann_trapezoid`` (default) uses ``a_s = s / (n - 1)`` and trapezoid weights
that sum to 1, so a linear model is integrated exactly. Captum's ``riemann_trapezoid`` uses the same
points but weights ``1/n`` (ends halved), which sum to ``(n - 1) / n``: its attributions are ours times
``(n - 1) / n``. ``riemann_left|right|middle`` and ``gausslegendre`` match Captum's. The paper uses
the right Riemann sum.

Baselines (``baseline``): ``black`` (default) is a raw black image after the model's normalisation, i.e.
``input_range[0]`` per channel (all zeros when the caller passes no ``input_range``); ``zeros`` is the
all-zero *normalised* input (the dataset mean colour under mean/std normalisation); ``blur`` the input
blurred with a Gaussian of ``blur_sigma`` pixels; ``uniform`` uniform noise in the input range drawn
from ``seed`` (one draw shared by every image, so results do not depend on how images are batched).

The ``steps x B`` path inputs run ``chunk_size`` at a time (step-major rows), each chunk with
one forward pass and one backward pass per target rank.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from xaicli.errors import ConfigError
from xaicli.methods.base import CHUNK_OPTION, Call, InputRange, Option, TargetSpec, resolve_targets
from xaicli.methods.gradient._base import (
    BASELINE_HELP,
    BASELINES,
    PIXEL_OPTIONS,
    Attribution,
    PixelMethod,
    reference_input,
    row_chunks,
)
from xaicli.methods.hooks import inference_state
from xaicli.methods.registry import register

QUADRATURES = ("riemann_trapezoid", "gausslegendre", "riemann_left", "riemann_right", "riemann_middle")


def quadrature(method: str, steps: int) -> tuple[list[float], list[float]]:
    """Points ``a_s`` in [0, 1] and weights ``w_s`` (summing to 1) for ``int_0^1 f(a) da``."""
    n = steps
    if method == "riemann_trapezoid":
        if n < 2:
            raise ValueError("riemann_trapezoid needs at least 2 steps")
        weights = [1.0 / (n - 1)] * n
        weights[0] /= 2
        weights[-1] /= 2
        return [s / (n - 1) for s in range(n)], weights
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)  # on [-1, 1]; constants, not data
        return [float(0.5 * (1 + a)) for a in nodes], [float(0.5 * v) for v in w]
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return [(s + offset) / n for s in range(n)], [1.0 / n] * n


@register
class IntegratedGradients(PixelMethod):
    name = "integrated_gradients"
    summary = "Integrated gradients: gradients averaged on the straight path from a baseline, times (x - x')."
    paper = "Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017 (arXiv:1703.01365)"
    can_wrap = True
    chunked = True
    options = {
        **PIXEL_OPTIONS,
        "steps": Option(50, "number of points on the path from the baseline to the input", minimum=1),
        "method": Option("riemann_trapezoid", "quadrature rule along the path", choices=QUADRATURES),
        "baseline": Option("black", BASELINE_HELP, choices=BASELINES),
        "blur_sigma": Option(5.0, "Gaussian sigma in pixels for baseline: blur", minimum=0.0),
        "seed": Option(0, "random seed for baseline: uniform", minimum=0),
        "chunk_size": CHUNK_OPTION,
    }

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any], key: str = "options") -> dict[str, Any]:
        opts = super().resolve_options(given, key)
        if opts["method"] == "riemann_trapezoid" and opts["steps"] < 2:
            raise ConfigError(f"{key}.steps", "riemann_trapezoid needs at least 2 steps")
        return opts

    def baseline(self, x: Tensor, input_range: InputRange | None = None) -> Tensor:
        """The reference input x' (B, C, H, W) for ``x`` (see :func:`._base.reference_input`)."""
        opts = self.opts
        return reference_input(opts["baseline"], x, input_range, opts["blur_sigma"], opts["seed"])

    def raw(self, x: Tensor, targets: TargetSpec, call: Call) -> Attribution:
        b = x.shape[0]
        dev = x.device
        acc_dtype = torch.promote_types(x.dtype, torch.float32)
        alphas_l, weights_l = quadrature(self.opts["method"], self.opts["steps"])
        alphas = torch.tensor(alphas_l, device=dev, dtype=x.dtype)  # (S,)
        weights = torch.tensor(weights_l, device=dev, dtype=acc_dtype)  # (S,)
        with inference_state(self.model):
            x = x.detach()
            base = self.baseline(x, call.input_range).detach()  # (B, C, H, W)
            with torch.no_grad():
                logits, base_logits = self.model(torch.cat([x, base])).split(b)  # (B, N) each
            tgt = resolve_targets(logits, targets)  # (B, K)
            k_count = tgt.shape[1]
            diff = x - base  # (B, C, H, W)
            total = torch.zeros((k_count, *x.shape), device=dev, dtype=acc_dtype)  # (K, B, C, H, W)
            for _, rows in row_chunks(len(alphas) * b, call.chunk_size, dev):
                step, img = rows // b, rows % b  # step-major rows: (n,), (n,)
                path = base[img] + alphas[step].view(-1, 1, 1, 1) * diff[img]  # (n, C, H, W)
                leaf = path.requires_grad_(True)
                with torch.enable_grad():
                    out = self.model(leaf)  # (n, N)
                    for k in range(k_count):
                        score = out.gather(1, tgt[img, k : k + 1]).sum()
                        (g,) = torch.autograd.grad(score, leaf, retain_graph=k < k_count - 1)  # (n, C, H, W)
                        total[k].index_add_(0, img, g.to(acc_dtype) * weights[step].view(-1, 1, 1, 1))
        attr = total.transpose(0, 1) * diff[:, None].to(acc_dtype)  # (B, K, C, H, W)
        gap = (logits.gather(1, tgt) - base_logits.gather(1, tgt)).to(acc_dtype)  # (B, K)
        delta = attr.flatten(2).sum(-1) - gap  # (B, K)
        return Attribution(maps={None: attr}, targets=tgt, logits=logits, extras={"ig_delta": delta.float()})
