"""Max-sensitivity (Yeh, Hsieh, Suggala, Inouye & Ravikumar, On the (In)fidelity and Sensitivity of
Explanations, NeurIPS 2019, arXiv:1901.09392, sec. 4, eq. "SENS_MAX").

How much the map changes under small input perturbations, the worst case over ``samples`` draws::

    SENS_MAX = max_{j} || Phi(x + d_j) - Phi(x) ||_F / || Phi(x) ||_F,   d_j ~ U[-radius, radius]^(C x H x W)

with Phi(x) the map for the same target, recomputed exactly like the original (lower = more robust).
This is Captum's ``sensitivity_max`` (default ``perturb_radius`` 0.02, ``n_perturb_samples`` 10, Frobenius
norm, a zero-norm map divided by 1): the perturbation is added to the normalised model input, as Captum
adds it to the tensor it is given. The draws are seeded per image, so a value does not depend on
batching.
"""

from __future__ import annotations

import torch

from xaicli.methods import Option
from xaicli.metrics.base import Metric, MetricInput, MetricResult, per_image_uniform
from xaicli.metrics.registry import register


def relative_change(maps: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) maps and (B, S, K, H, W) perturbed maps -> (B, S, K) ||diff||_F / ||map||_F (0 -> 1)."""
    norm = maps.flatten(2).norm(dim=-1)  # (B, K)
    norm = torch.where(norm == 0, torch.ones_like(norm), norm)
    return (perturbed - maps[:, None]).flatten(3).norm(dim=-1) / norm[:, None]


@register
class MaxSensitivity(Metric):
    name = "max_sensitivity"
    summary = ("Max-sensitivity: the largest relative change of the map under small uniform input "
               "noise (lower = more robust).")
    paper = "Yeh et al., On the (In)fidelity and Sensitivity of Explanations, NeurIPS 2019 (arXiv:1901.09392)"
    family = "robustness"
    higher_is_better = False
    reexplains = True
    options = {
        "samples": Option(10, "perturbed copies per image", minimum=1),
        "radius": Option(0.02, "half-width of the uniform perturbation, in normalised input units",
                         minimum=0.0),
        "seed": Option(0, "seed of the perturbations (per image)", minimum=0),
    }

    def compute(self, inp: MetricInput) -> MetricResult:
        b, k = inp.shape
        s = self.opts["samples"]
        r = self.opts["radius"]
        noise = per_image_uniform(inp.ids, self.opts["seed"], (s, *inp.x.shape[1:]), inp.x.device, -r, r)
        perturbed = (inp.x[:, None] + noise.to(inp.x.dtype)).flatten(0, 1)  # (B*S, C, H, W), image-major
        targets = inp.targets.repeat_interleave(s, dim=0)  # (B*S, K)
        maps = inp.source.explain(inp.model, perturbed, targets, rows=inp.chunk_size)  # (B*S, K, H, W)
        change = relative_change(inp.maps, maps.view(b, s, *maps.shape[1:]))  # (B, S, K)
        return MetricResult(change.amax(dim=1).float())
