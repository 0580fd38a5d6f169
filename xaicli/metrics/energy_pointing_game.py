"""Energy-based pointing game (Wang et al., Score-CAM, CVPR Workshops 2020, arXiv:1910.01279, sec. 5.3).

The share of the map's energy that falls on the object::

    proportion = sum_{(i, j) in object} |L_ij| / sum_{(i, j)} |L_ij|

Score-CAM's maps are non-negative, and so are xaicli's CAM maps; signed maps count their magnitude
(energy). NaN for an image without an object or an all-zero map. With box annotations the object is
the union of the boxes, as in the paper.
"""

from __future__ import annotations

from xaicli.metrics._localisation import mass_share
from xaicli.metrics.base import Metric, MetricInput, MetricResult
from xaicli.metrics.registry import register


@register
class EnergyPointingGame(Metric):
    name = "energy_pointing_game"
    summary = "Energy-based pointing game: the share of the map's energy |map| that lies on the object."
    paper = "Wang et al., Score-CAM, CVPR Workshops 2020 (arXiv:1910.01279), sec. 5.3"
    family = "localisation"
    needs_masks = True

    def compute(self, inp: MetricInput) -> MetricResult:
        return MetricResult(mass_share(inp.maps.abs(), inp.masks.to(inp.maps.device).bool()))
