"""ROAD, most relevant first (Rong et al., ICML 2022, arXiv:2202.00449): remove the pixels the map
ranks highest, impute them, and measure the drop of the target's probability (lower = better).
The shared procedure is in :mod:`._road`."""

from __future__ import annotations

from xaicli.metrics._road import ROADMetric
from xaicli.metrics.registry import register


@register
class ROADMostRelevantFirst(ROADMetric):
    name = "road_morf"
    summary = ("ROAD MoRF: probability change after imputing the most relevant pixels, mean over "
               "percentiles (lower = better).")
    paper = "Rong et al., A Consistent and Efficient Evaluation Strategy for Attribution Methods, ICML 2022"
    higher_is_better = False
    most_relevant_first = True
