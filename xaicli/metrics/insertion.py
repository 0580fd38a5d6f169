"""Insertion (Petsiuk, Das & Saenko, RISE, BMVC 2018, sec. 4.1; arXiv:1806.07421).

Start from a blurred copy of the input and restore the pixels the map ranks highest first, ``step``
pixels at a time: a faithful map makes the target's probability rise fast, so a *higher* area is better::

    x_0 = blur(x),   x_i = blur(x) with the i*step top-ranked pixels restored from x,   i = 0..n
    curve_i = softmax(f(x_i))_c,   insertion = (sum_i curve_i - curve_0 / 2 - curve_n / 2) / n

The blur is the RISE authors' (an 11 x 11 ``gaussian_filter`` of a delta, sigma 5, per channel, zero
padding) applied to the normalised input; order, schedule and area as in :mod:`._causal`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


@register
class Insertion(Metric):
    name = "insertion"
    summary = ("Insertion: area under the target probability as the top-ranked pixels are restored "
               "into a blurred input.")
    paper = "Petsiuk et al., RISE, BMVC 2018 (arXiv:1806.07421), sec. 4.1"
    family = "faithfulness"
    higher_is_better = True
    options = {"steps": STEPS_OPTION, **BLUR_OPTIONS}

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any] | None, key: str = "options") -> dict[str, Any]:
        return check_blur_options(super().resolve_options(given, key), key)

    def compute(self, inp: MetricInput) -> MetricResult:
        x = inp.x.contiguous()
        start = rise_blur(x, self.opts["blur_kernel"], self.opts["blur_sigma"])
        curves = causal_curves(inp.model, start, x, inp.maps, inp.targets, self.opts["steps"],
                               inp.chunk_size)
        return MetricResult(causal_auc(curves), {"curve": curves})
