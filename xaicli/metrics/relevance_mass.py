"""Relevance mass accuracy (Arras, Osman & Samek, CLEVR-XAI: A benchmark dataset for the ground truth
evaluation of neural network explanations, Information Fusion 2022, arXiv:2003.07258, sec. 4.2).

The share of the positive relevance that lies on the object (ground-truth mask GT)::

    mass accuracy = R_within / R_total,   R_within = sum_{k in GT} max(R_k, 0),   R_total = sum_k max(R_k, 0)

On non-negative maps (every xaicli map except ``reduce: sum``) it equals the energy pointing game and
Quantus' ``RelevanceMassAccuracy``; on signed maps only the positive evidence counts (the paper's
choice). NaN for an image without an object or a map without positive relevance.
"""

from __future__ import annotations

from xaicli.metrics._localisation import mass_share
from xaicli.metrics.base import Metric, MetricInput, MetricResult
from xaicli.metrics.registry import register


@register
class RelevanceMass(Metric):
    name = "relevance_mass"
    summary = "Relevance mass accuracy: the share of the positive relevance that lies on the object."
    paper = "Arras et al., CLEVR-XAI, Information Fusion 2022 (arXiv:2003.07258), sec. 4.2"
    family = "localisation"
    needs_masks = True

    def compute(self, inp: MetricInput) -> MetricResult:
        return MetricResult(mass_share(inp.maps.clamp_min(0), inp.masks.to(inp.maps.device).bool()))
