"""Deletion (Petsiuk, Das & Saenko, RISE, BMVC 2018, sec. 4.1; arXiv:1806.07421).

Remove the pixels the map ranks highest first, ``step`` pixels at a time, and follow the target's
probability: a faithful map makes it drop fast, so a *lower* area under the curve is better::

    x_0 = x,   x_i = x with the i*step top-ranked pixels replaced by the substrate,   i = 0..n
    curve_i = softmax(f(x_i))_c,   deletion = (sum_i curve_i - curve_0 / 2 - curve_n / 2) / n

(the order, schedule and area are the RISE authors' ``CausalMetric``: see :mod:`._causal`).
Substrate (``substrate``): ``mean`` - zero in normalised space, i.e. the dataset mean colour (the
default, as RISE's ``torch.zeros_like``); ``black`` - raw 0 after normalisation (needs the input range);
``blur`` - the RISE blur of the input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from xaicli.methods import Option
from xaicli.metrics._causal import (
    BLUR_OPTIONS,
    STEPS_OPTION,
    causal_auc,
    causal_curves,
    check_blur_options,
    rise_blur,
)
from xaicli.metrics.base import Metric, MetricInput, MetricResult
from xaicli.metrics.registry import register

SUBSTRATES = ("mean", "black", "blur")


@register
class Deletion(Metric):
    name = "deletion"
    summary = ("Deletion: area under the target probability as the top-ranked pixels are removed "
               "(lower = better).")
    paper = "Petsiuk et al., RISE, BMVC 2018 (arXiv:1806.07421), sec. 4.1"
    family = "faithfulness"
    higher_is_better = False
    options = {
        "steps": STEPS_OPTION,
        "substrate": Option("mean", "what removed pixels become: mean (0 in normalised space, RISE), black "
                            "(raw 0) or blur (the RISE blur of the input)", choices=SUBSTRATES),
        **BLUR_OPTIONS,
    }

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any] | None, key: str = "options") -> dict[str, Any]:
        return check_blur_options(super().resolve_options(given, key), key)

    def compute(self, inp: MetricInput) -> MetricResult:
        x = inp.x.contiguous()
        kind = self.opts["substrate"]
        if kind == "mean":
            finish = torch.zeros_like(x)
        elif kind == "black":
            if inp.input_range is None:
                raise ValueError("deletion substrate 'black' needs the input range (raw 0 after "
                                 "normalisation): pass input_range")
            finish = inp.input_range[0].to(x).view(1, -1, 1, 1).expand_as(x).contiguous()
        else:
            finish = rise_blur(x, self.opts["blur_kernel"], self.opts["blur_sigma"])
        curves = causal_curves(inp.model, x, finish, inp.maps, inp.targets, self.opts["steps"],
                               inp.chunk_size)
        return MetricResult(causal_auc(curves), {"curve": curves})
