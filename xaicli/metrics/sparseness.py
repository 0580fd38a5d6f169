"""Sparseness (Chalasani et al., Concise Explanations of Neural Networks using Adversarial Training,
ICML 2020, arXiv:1810.06583, sec. 5): the Gini index of the map's magnitudes.

With a = |map| flattened and sorted ascending, a_(1) <= ... <= a_(n) (Hurley & Rickard 2009, eq. "G")::

    G(a) = sum_i (2 i - n - 1) a_(i) / (n sum_i a_(i))

0 for a constant map (everything equally important), (n - 1) / n for a map with one non-zero pixel;
higher = more concise. An all-zero map has no distribution: NaN. Quantus' ``Sparseness`` is the same
formula with 1e-7 added to every value (so it returns ~0 for an all-zero map).
"""

from __future__ import annotations

import torch

from xaicli.metrics.base import Metric, MetricInput, MetricResult
from xaicli.metrics.registry import register


def gini(values: torch.Tensor) -> torch.Tensor:
    """(..., n) non-negative values -> (...) Gini index, in float64; NaN where the sum is 0."""
    a = values.to(torch.float64).sort(dim=-1).values
    n = a.shape[-1]
    i = torch.arange(1, n + 1, device=a.device, dtype=torch.float64)
    total = a.sum(-1)
    g = ((2 * i - n - 1) * a).sum(-1) / (n * total)
    return torch.where(total > 0, g, torch.full_like(g, float("nan")))


@register
class Sparseness(Metric):
    name = "sparseness"
    summary = "Sparseness: Gini index of |map| (0 = uniform, near 1 = a few pixels carry everything)."
    paper = "Chalasani et al., Concise Explanations of Neural Networks using Adversarial Training, ICML 2020"
    family = "complexity"
    higher_is_better = True

    def compute(self, inp: MetricInput) -> MetricResult:
        return MetricResult(gini(inp.maps.abs().flatten(2)).float())
