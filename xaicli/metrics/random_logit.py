"""Random logit test (Sixt, Granz & Landgraf, When Explanations Lie: Why Many Modified BP Attributions
Fail, ICML 2020, arXiv:1912.09818, sec. 4).

A map that explains *the target class* should differ from the map of another class. For every
(image, target) another class is drawn uniformly (seeded per image and target, so the draw does not
depend on batching), its map is computed exactly like the original, and the two are compared by SSIM
(7 x 7 window, data range 1): a high similarity means the map ignores which class it explains (lower =
better). The drawn class is written as ``random_class``.
"""

from __future__ import annotations

import torch

from xaicli.methods import Option
from xaicli.metrics.base import Metric, MetricInput, MetricResult, mix
from xaicli.metrics.registry import register
from xaicli.metrics.similarity import ssim


def other_classes(targets: torch.Tensor, ids: torch.Tensor, n_classes: int, seed: int) -> torch.Tensor:
    """(B, K) targets -> a uniformly drawn different class for each (deterministic in seed, id, rank)."""
    b, k = targets.shape
    draw = mix(seed, ids.view(b, 1).cpu(), torch.arange(k).view(1, k)) % max(n_classes - 1, 1)
    return (targets + 1 + draw.to(targets.device)) % n_classes


@register
class RandomLogit(Metric):
    name = "random_logit"
    summary = ("Random logit: SSIM between the target's map and the map of a random other class "
               "(lower = class-sensitive).")
    paper = "Sixt et al., When Explanations Lie, ICML 2020 (arXiv:1912.09818), sec. 4"
    family = "randomisation"
    higher_is_better = False
    reexplains = True
    options = {
        "seed": Option(42, "seed of the random class draw", minimum=0),
        "data_range": Option(1.0, "SSIM data range (maps are in [0, 1])", minimum=0.0),
    }

    def compute(self, inp: MetricInput) -> MetricResult:
        b, k = inp.shape
        n_classes = int(inp.model(inp.x[:1]).shape[1])
        off = other_classes(inp.targets, inp.ids, n_classes, self.opts["seed"])
        maps = inp.source.explain(inp.model, inp.x, off, rows=inp.chunk_size)
        sim = ssim(inp.maps.flatten(0, 1), maps.flatten(0, 1), self.opts["data_range"]).view(b, k)
        return MetricResult(sim.float(), {"random_class": off})
