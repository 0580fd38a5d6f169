"""ROAD, least relevant first (Rong et al., ICML 2022, arXiv:2202.00449): remove the pixels the map
ranks lowest, impute them, and measure the change of the target's probability (higher = better).
The shared procedure is in :mod:`._road`."""

from __future__ import annotations

from xaicli.metrics._road import ROADMetric
from xaicli.metrics.registry import register


@register
class ROADLeastRelevantFirst(ROADMetric):
    name = "road_lerf"
    summary = ("ROAD LeRF: probability change after imputing the least relevant pixels, mean over "
               "percentiles (higher = better).")
    paper = "Rong et al., A Consistent and Efficient Evaluation Strategy for Attribution Methods, ICML 2022"
    higher_is_better = True
    most_relevant_first = False
