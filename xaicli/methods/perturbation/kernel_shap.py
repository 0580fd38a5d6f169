"""Kernel SHAP on superpixels (Lundberg & Lee, NeurIPS 2017, arXiv:1705.07874).

Shapley values of the superpixels, as the solution of LIME's regression with the Shapley kernel
(Theorem 2):

    pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|))

Like Captum's ``KernelShap`` (and the ``shap`` package's sampling), the ``samples`` (default 1,000)
coalitions are drawn *from* the kernel - a size k in 1..M-1 with probability proportional to
(M - 1) / (k (M - k)), then k superpixels uniformly - so each has weight 1 in the regression, and
the two coalitions of infinite weight are exact constraints: ``phi_0 = s(fill)`` (one extra forward
pass with every superpixel filled) and efficiency, ``sum_i phi_i = s(x) - s(fill)``
(:func:`._regression.constrained_least_squares`; Captum approximates them with weight 10^6). For a score
that is linear in the superpixels the result is the exact Shapley values for any samples; otherwise the
estimate converges to them as ``samples`` grows. Given the same feature mask and samples, Captum's
``KernelShap`` gives the same values (tests/test_parity_perturbation.py). Coalitions are drawn from
``seed`` and M alone (see :mod:`._base`).

Cost: at most ``B * (samples + 1)`` forward passes per batch whatever the number of targets (a
coalition drawn twice runs once and counts twice, see :mod:`._superpixels`: with the default 1,000
samples, 14 % fewer forward passes for 50 superpixels, 20 % for 30, most repeats of size 1 or M - 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from xaicli.methods.base import Option
from xaicli.methods.perturbation._regression import constrained_least_squares
from xaicli.methods.perturbation._superpixels import SUPERPIXEL_OPTIONS, SuperpixelMethod
from xaicli.methods.registry import register


@register
class KernelShap(SuperpixelMethod):
    name = "kernel_shap"
    summary = "Kernel SHAP: Shapley values of the superpixels from a regression with the Shapley kernel."
    paper = ("Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017 "
             "(arXiv:1705.07874)")
    options = {
        "samples": Option(1000, "number of sampled coalitions per image (plus one forward with every "
                          "superpixel filled)", minimum=1),
        "seed": Option(0, "random seed of the coalitions (the same for every image with as many "
                       "superpixels)", minimum=0),
        **SUPERPIXEL_OPTIONS,
    }

    def coalitions(self, m: int) -> Tensor:
        """(1 + samples, m): the empty coalition, then coalitions drawn from the Shapley kernel (none for
        m = 1, where the single value is s(x) - s(fill))."""
        empty = torch.zeros((1, m))
        if m == 1:
            return empty
        gen = torch.Generator().manual_seed(self.opts["seed"])
        sizes = torch.arange(1, m, dtype=torch.float64)
        k = torch.multinomial(1 / (sizes * (m - sizes)), self.opts["samples"], replacement=True,
                              generator=gen) + 1  # (S,) coalition sizes in 1..m-1
        order = torch.rand((self.opts["samples"], m), generator=gen).argsort(dim=1)  # random permutations
        chosen = (torch.arange(m)[None] < k[:, None]).float()  # (S, m): the first k of each permutation
        return torch.cat([empty, torch.zeros_like(chosen).scatter_(1, order, chosen)])

    def fit(self, z: Tensor, counts: Tensor, y: Tensor, clean: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        empty = z.sum(dim=1) == 0  # the one all-filled input (never drawn: sizes are 1..M-1)
        sampled = ~empty
        return constrained_least_squares(z[sampled], y[sampled], counts[sampled], y[empty][0], clean), {}
