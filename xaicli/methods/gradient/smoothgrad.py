"""SmoothGrad (Smilkov et al., 2017, arXiv:1706.03825) around any gradient method.

    smoothgrad      M(x) = 1/n sum_s A(x + e_s)              (eq. 3)
    smoothgrad_sq   M(x) = 1/n sum_s A(x + e_s)^2
    vargrad         M(x) = 1/n sum_s A(x + e_s)^2 - (1/n sum_s A(x + e_s))^2    (Adebayo et al. 2018)

with ``A`` the raw (unreduced) attributions of the ``base`` method and ``e_s ~ N(0, sigma_c^2)``. As in
the paper, ``sigma`` is a fraction of the input range: ``sigma_c = sigma * (hi_c - lo_c)`` per channel,
from the call's ``input_range`` when the caller knows it, else from each image's own per-channel
min..max (the paper's code uses the image's global range; Captum's ``NoiseTunnel`` takes absolute
stdevs). Defaults: 25 samples and sigma 0.15 (paper: 10-20 % noise, n ~ 50 is "enough"). The variance is
the population variance (as Captum), clamped at 0 against rounding.

Noise draws: sample ``s`` uses one (C, H, W) draw ``e_s``, taken in order from a generator seeded with
``seed`` and shared by every image of the batch (:mod:`._draws`). Each image's result therefore depends
only on the image and the seed, not on the batch it came in or on ``chunk_size`` (the engine may shrink
both on out-of-memory errors). ``sigma: 0`` runs a single noise-free sample (all samples would be equal).

The ``samples x B`` noisy inputs run ``chunk_size`` at a time (sample-major rows) through the base
method's :meth:`~PixelMethod.raw` (which gets the same call settings, so a chunked base such as
integrated gradients chunks its own path points by the same size); the bases are the registered methods
with ``can_wrap``; ``base_options`` configures the base (its reduction options
are ignored: the smoothed raw attributions are reduced with this method's own ``reduce``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xaicli.errors import ConfigError, format_choices
from xaicli.methods.base import CHUNK_OPTION, Call, Option, TargetSpec, resolve_targets
from xaicli.methods.gradient._base import (
    PIXEL_OPTIONS,
    Attribution,
    PixelMethod,
    input_bounds,
    row_chunks,
)
from xaicli.methods.gradient._draws import SampleDraws
from xaicli.methods.hooks import inference_state
from xaicli.methods.registry import get_method, methods_where, register

VARIANTS = ("smoothgrad", "smoothgrad_sq", "vargrad")


@register
class SmoothGrad(PixelMethod):
    name = "smoothgrad"
    summary = "SmoothGrad: a gradient method averaged over noisy copies of the input (or their variance)."
    paper = "Smilkov et al., SmoothGrad: removing noise by adding noise, 2017 (arXiv:1706.03825)"
    chunked = True
    options = {
        **PIXEL_OPTIONS,
        "base": Option("saliency", "the gradient method that is smoothed: any method with can_wrap "
                       "(saliency, input_x_gradient, guided_backprop, deconvnet, integrated_gradients, "
                       "deeplift)"),
        "samples": Option(25, "number of noisy copies per image", minimum=1),
        "sigma": Option(0.15, "noise standard deviation as a fraction of the input range (hi - lo) per "
                        "channel", minimum=0.0),
        "variant": Option("smoothgrad", "smoothgrad (mean), smoothgrad_sq (mean of squares) or vargrad "
                          "(variance)", choices=VARIANTS),
        "seed": Option(0, "random seed of the noise", minimum=0),
        "chunk_size": CHUNK_OPTION,
        "base_options": Option(None, "options passed to the base method, e.g. {steps: 16} for "
                               "integrated_gradients (default: none)"),
    }

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any], key: str = "options") -> dict[str, Any]:
        opts = super().resolve_options(given, key)
        bases = methods_where(can_wrap=True)
        if opts["base"] not in bases:
            raise ConfigError(f"{key}.base", f"{opts['base']!r} cannot be smoothed; "
                              + format_choices(str(opts["base"]), bases))
        base_options = opts["base_options"] or {}
        if not isinstance(base_options, Mapping):
            raise ConfigError(f"{key}.base_options",
                              f"expected a mapping of option: value, got {base_options!r}")
        if "chunk_size" in base_options:
            raise ConfigError(f"{key}.base_options.chunk_size", "set chunk_size on smoothgrad itself: its "
                              "base runs with the same chunk size")
        get_method(opts["base"]).resolve_options(base_options, key=f"{key}.base_options")
        return {**opts, "base_options": dict(base_options)}

    def __init__(self, model: nn.Module, layers: Sequence[str] = (), **options: Any):
        super().__init__(model, layers, **options)
        base_cls = get_method(self.opts["base"])
        self.base: PixelMethod = base_cls(model, layers, **self.opts["base_options"])  # type: ignore[assignment]

    def swaps_relu_rules(self) -> bool:
        return self.base.swaps_relu_rules()

    def map_options(self) -> dict[str, Any]:
        """Its own options, with the base method's resolved (defaults filled in) under ``base_options``."""
        return {**super().map_options(), "base_options": self.base.map_options()}

    def raw(self, x: Tensor, targets: TargetSpec, call: Call) -> Attribution:
        b = x.shape[0]
        dev = x.device
        acc_dtype = torch.promote_types(x.dtype, torch.float32)
        samples = self.opts["samples"] if self.opts["sigma"] > 0 else 1
        with inference_state(self.model):
            x = x.detach()
            with torch.no_grad():
                logits = self.model(x)  # (B, N)
            tgt = resolve_targets(logits, targets)  # (B, K)
            lo, hi = input_bounds(x, call.input_range)
            std = self.opts["sigma"] * (hi - lo)  # (1 or B, C, 1, 1)
            std_rows = std.expand(b, *std.shape[1:])  # (B, C, 1, 1)
            def gaussian(gen: torch.Generator) -> tuple[Tensor]:  # e_s ~ N(0, 1), (C, H, W)
                return (torch.randn(x.shape[1:], generator=gen, device=dev, dtype=x.dtype),)

            noise = SampleDraws(self.opts["seed"], dev, gaussian)
            total = sq = None
            for span, rows in row_chunks(samples * b, call.chunk_size, dev):
                first = span[0] // b
                (eps,) = noise.draws(first, span[-1] // b)  # (samples in this chunk, C, H, W)
                sample, img = rows // b - first, rows % b  # sample-major rows: (n,), (n,)
                noisy = x[img] + eps[sample] * std_rows[img]  # (n, C, H, W)
                a = self.base.raw(noisy, tgt[img], call).maps[None].to(acc_dtype)  # (n, K, C, H, W)
                if total is None:
                    total = torch.zeros((b, *a.shape[1:]), device=dev, dtype=acc_dtype)  # (B, K, C, H, W)
                    sq = torch.zeros_like(total)
                total.index_add_(0, img, a)
                sq.index_add_(0, img, a * a)
        mean, mean_sq = total / samples, sq / samples
        if self.opts["variant"] == "smoothgrad":
            attr = mean
        elif self.opts["variant"] == "smoothgrad_sq":
            attr = mean_sq
        else:
            attr = (mean_sq - mean * mean).clamp_min(0)
        return Attribution(maps={None: attr}, targets=tgt, logits=logits)
