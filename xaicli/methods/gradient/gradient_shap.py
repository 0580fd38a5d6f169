"""GradientSHAP (Lundberg & Lee, NeurIPS 2017, arXiv:1705.07874; as Captum's ``GradientShap``).

Expected gradients: SHAP values approximated by integrated gradients averaged over a distribution of
baselines, with the path integral replaced by one random point per sample (Erion et al. 2021, "expected
gradients"). For samples ``s = 1..n``, a baseline ``x'_s``, a point ``a_s ~ U(0, 1)`` on the path
and optional noise ``e_s`` give, with ``z_s = x + e_s`` (Captum's formulation):

    GS_i(x) = 1/n sum_s (z_s,i - x'_s,i) * d y^c / d x_i  at  a_s z_s + (1 - a_s) x'_s

In expectation the attributions sum to ``E_s[y^c(z_s) - y^c(x'_s)]``. Baselines (``baseline``):
``uniform`` (default) draws a new uniform-noise image in the input range for each sample;
``black_white`` draws each value of the baseline from black and white (equally likely, independently);
``black``, ``zeros`` and ``blur`` are one fixed baseline (see integrated gradients), which makes
GradientSHAP a Monte-Carlo integrated gradients. ``sigma`` is the noise standard deviation as a
fraction of the input range per channel, as SmoothGrad's (Captum's ``stdevs`` are absolute); 0
(default, as Captum) adds none.

Draws (:mod:`._draws`): sample ``s`` draws, in this order, its point ``a_s``, then its baseline noise
(``uniform`` / ``black_white``), then its Gaussian noise (``sigma > 0``), all of one image's shape, from a
generator seeded with ``seed`` and shared by every image, so an image's map does not depend on its batch
or on ``chunk_size``. The ``samples x B`` rows (sample-major) run ``chunk_size`` at a time, one forward
and one backward pass per target rank each.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xaicli.methods.base import CHUNK_OPTION, Call, Option, TargetSpec, resolve_targets
from xaicli.methods.gradient._base import (
    PIXEL_OPTIONS,
    Attribution,
    PixelMethod,
    input_bounds,
    reference_input,
    row_chunks,
)
from xaicli.methods.gradient._draws import SampleDraws
from xaicli.methods.hooks import inference_state
from xaicli.methods.registry import register

BASELINES = ("uniform", "black_white", "black", "zeros", "blur")
RANDOM_BASELINES = ("uniform", "black_white")


@register
class GradientShap(PixelMethod):
    name = "gradient_shap"
    summary = ("GradientSHAP: gradients at random points between the input and random baselines, times "
               "(input - baseline).")
    paper = ("Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017 "
             "(arXiv:1705.07874)")
    chunked = True
    options = {
        **PIXEL_OPTIONS,
        "samples": Option(25, "number of (baseline, path point, noise) draws per image", minimum=1),
        "baseline": Option("uniform", "baseline distribution: uniform (noise in the input range, a new image "
                           "per sample), black_white (each value black or white), or one fixed baseline: "
                           "black, zeros (normalised 0), blur", choices=BASELINES),
        "blur_sigma": Option(5.0, "Gaussian sigma in pixels for baseline: blur", minimum=0.0),
        "sigma": Option(0.0, "noise standard deviation as a fraction of the input range per channel (0: no "
                        "noise, as Captum's default)", minimum=0.0),
        "seed": Option(0, "random seed of the draws", minimum=0),
        "chunk_size": CHUNK_OPTION,
    }

    def sampler(self, x: Tensor) -> SampleDraws:
        """Per sample: (a_s () , baseline noise u_s (C, H, W) or empty, Gaussian e_s (C, H, W) or empty)."""
        shape, dev, dtype = x.shape[1:], x.device, x.dtype
        random_baseline = self.opts["baseline"] in RANDOM_BASELINES
        noisy = self.opts["sigma"] > 0
        empty = torch.zeros((0,), device=dev, dtype=dtype)

        def draw(gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
            a = torch.rand((), generator=gen, device=dev, dtype=dtype)
            u = torch.rand(shape, generator=gen, device=dev, dtype=dtype) if random_baseline else empty
            e = torch.randn(shape, generator=gen, device=dev, dtype=dtype) if noisy else empty
            return a, u, e

        return SampleDraws(self.opts["seed"], dev, draw)

    def raw(self, x: Tensor, targets: TargetSpec, call: Call) -> Attribution:
        b, dev = x.shape[0], x.device
        acc_dtype = torch.promote_types(x.dtype, torch.float32)
        kind, samples = self.opts["baseline"], self.opts["samples"]
        with inference_state(self.model):
            x = x.detach()
            with torch.no_grad():
                logits = self.model(x)  # (B, N)
            tgt = resolve_targets(logits, targets)  # (B, K)
            k_count = tgt.shape[1]
            lo, hi = (t.expand(b, *t.shape[1:]) for t in input_bounds(x, call.input_range))  # (B, C, 1, 1)
            std = self.opts["sigma"] * (hi - lo)  # (B, C, 1, 1)
            fixed = None if kind in RANDOM_BASELINES else reference_input(
                kind, x, call.input_range, self.opts["blur_sigma"])  # (B, C, H, W)
            draws = self.sampler(x)
            total = torch.zeros((k_count, *x.shape), device=dev, dtype=acc_dtype)  # (K, B, C, H, W)
            for span, rows in row_chunks(samples * b, call.chunk_size, dev):
                first = span[0] // b
                a, u, e = draws.draws(first, span[-1] // b)  # (s,), (s, C, H, W) or (s, 0), same
                sample, img = rows // b - first, rows % b  # sample-major rows: (n,), (n,)
                z = x[img] + e[sample] * std[img] if e.numel() else x[img]  # (n, C, H, W)
                if kind == "uniform":
                    base = lo[img] + u[sample] * (hi[img] - lo[img])
                elif kind == "black_white":
                    base = torch.where(u[sample] < 0.5, lo[img], hi[img])
                else:
                    base = fixed[img]
                alpha = a[sample].view(-1, 1, 1, 1)
                leaf = (alpha * z + (1 - alpha) * base).requires_grad_(True)  # (n, C, H, W)
                diff = (z - base).to(acc_dtype)
                with torch.enable_grad():
                    out = self.model(leaf)  # (n, N)
                    for k in range(k_count):
                        score = out.gather(1, tgt[img, k : k + 1]).sum()
                        (g,) = torch.autograd.grad(score, leaf, retain_graph=k < k_count - 1)
                        total[k].index_add_(0, img, g.to(acc_dtype) * diff)
        attr = total.transpose(0, 1) / samples  # (B, K, C, H, W)
        return Attribution(maps={None: attr}, targets=tgt, logits=logits)
