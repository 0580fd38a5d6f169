"""LIME on superpixels (Ribeiro, Singh & Guestrin, KDD 2016, arXiv:1602.04938; MATLAB imageLIME).

``samples`` (default 1,000) coalitions ``z`` in {0, 1}^M (see :mod:`._superpixels`): the first keeps
every superpixel (the image itself, as in the authors' ``lime_image``), the others switch each
superpixel on or off with probability 1/2. Each coalition is weighted by an exponential kernel of its
cosine distance to the image in the interpretable space (the all-ones vector):

    d(z) = 1 - cos(z, 1) = 1 - sqrt(|z| / M)      (d = 1 for the empty coalition)
    pi(z) = exp(-d(z)^2 / (2 kernel_width^2))      (lime_image's kernel, kernel_width 0.25)

and the surrogate is a weighted ridge regression with an unpenalised intercept (eq. 2 with a linear g;
``alpha`` 1.0 as ``lime``'s default ``Ridge``; :func:`._regression.weighted_ridge`). The attribution of a
superpixel is its coefficient, painted on its pixels (signed). The fit's weighted R^2 goes to the
manifest as ``lime_r2`` (how well a linear model of the superpixels explains the scores).

Captum's ``Lime`` defaults differ (cosine distance in *input* space with width 1, ``Lasso(alpha=0.01)``);
given the same feature mask, samples, kernel (its ``similarity_func``) and ``SkLearnRidge(alpha)``, it
gives the same coefficients (tests/test_parity_perturbation.py). Coalitions are drawn from ``seed`` and M
alone (see :mod:`._base`).

Cost: at most ``B * samples`` forward passes per batch whatever the number of targets (a coalition
drawn twice runs once and counts twice, see :mod:`._superpixels`), plus one M-sized solve per image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xaicli.methods.base import Option
from xaicli.methods.perturbation._regression import weighted_ridge
from xaicli.methods.perturbation._superpixels import SUPERPIXEL_OPTIONS, SuperpixelMethod
from xaicli.methods.registry import register


@register
class Lime(SuperpixelMethod):
    name = "lime"
    summary = "LIME: a locally weighted linear model of the target score over random superpixel samples."
    paper = ("Ribeiro et al., \"Why Should I Trust You?\": Explaining the Predictions of Any Classifier, "
             "KDD 2016 (arXiv:1602.04938)")
    options = {
        "samples": Option(1000, "number of perturbed inputs per image (the first is the image itself)",
                          minimum=1),
        "kernel_width": Option(0.25, "width of the exponential kernel on the cosine distance to the image",
                               minimum=1e-6),
        "alpha": Option(1.0, "ridge penalty of the linear surrogate (0 = ordinary weighted least squares)",
                        minimum=0.0),
        "seed": Option(0, "random seed of the samples (the same for every image with as many superpixels)",
                       minimum=0),
        **SUPERPIXEL_OPTIONS,
    }

    def coalitions(self, m: int) -> Tensor:
        """(samples, m): all ones, then uniform random on/off vectors drawn from ``seed``."""
        gen = torch.Generator().manual_seed(self.opts["seed"])
        drawn = torch.randint(0, 2, (self.opts["samples"] - 1, m), generator=gen).float()
        return torch.cat([torch.ones((1, m)), drawn])

    def kernel(self, z: Tensor) -> Tensor:
        """Sample weights pi(z) (P,) of coalitions ``z`` (P, M) (see the module docstring)."""
        on = z.sum(dim=1)
        distance = torch.where(on > 0, 1 - torch.sqrt(on / z.shape[1]), torch.ones_like(on))
        return torch.exp(-(distance**2) / (2 * self.opts["kernel_width"] ** 2))

    def fit(self, z: Tensor, counts: Tensor, y: Tensor, clean: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        beta, _, r2 = weighted_ridge(z, y, counts * self.kernel(z), self.opts["alpha"])
        return beta, {"lime_r2": r2}
