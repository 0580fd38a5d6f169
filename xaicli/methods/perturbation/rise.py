"""RISE: randomized input sampling for explanation (Petsiuk, Das & Saenko, BMVC 2018, arXiv:1806.07421).

``masks`` (N, default 2,000) random masks, each made as in the paper's code: a ``grid`` x ``grid``
(default 7 x 7) binary grid whose cells are 1 with probability ``p`` (0.5), upsampled bilinearly to
``(grid + 1) * ceil(H / grid)`` x ``(grid + 1) * ceil(W / grid)`` pixels and cropped to H x W at a random
offset ``(dy, dx)`` in ``[0, ceil(H / grid)) x [0, ceil(W / grid))`` - the random shift that keeps the
masks from being aligned to one grid. The saliency is the score-weighted mean mask (eq. 6):

    S(u) = 1 / (N p) * sum_i s(f + M_i (x - f)) M_i(u)

(with the default ``fill: mean`` the perturbed input is the paper's ``x * M_i`` in normalised space; the
paper scores with the softmax probability, ``score: probability``). Maps are not signed: they are
min-max normalised, which also removes the map's constant offset ``E[s]``.

Masks: the grids and offsets are drawn on the CPU from ``seed`` (so they are identical on every device
and in every process) and shared by all images of a batch; a chunk upsamples only the masks it needs.
The paper's code upsamples with scikit-image (``mode="reflect"``, mirrored past the border); here
``F.interpolate`` (half-pixel centres, the same interior values) repeats the border cell instead, which
only differs in the outermost half cell of the upsampled grid.

Cost: ``B * N`` forward passes per batch whatever the number of targets, plus one (B K, n) x (n, H W)
product per chunk of n rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xaicli.errors import ConfigError
from xaicli.methods.base import Call, Option
from xaicli.methods.perturbation._base import PERTURBATION_OPTIONS, PerturbationMethod, RawMaps
from xaicli.methods.registry import register


@dataclass
class RiseMasks:
    """N masks for inputs of ``size`` (H, W): ``grids`` (N, 1, s, s) and ``offsets`` (N, 2), drawn once,
    upsampled on demand (:meth:`__call__`)."""

    grids: Tensor
    offsets: Tensor
    size: tuple[int, int]

    @classmethod
    def draw(cls, n: int, grid: int, p: float, seed: int, size: tuple[int, int],
             device: torch.device) -> RiseMasks:
        gen = torch.Generator().manual_seed(seed)
        cell = (math.ceil(size[0] / grid), math.ceil(size[1] / grid))
        grids = (torch.rand((n, 1, grid, grid), generator=gen) < p).float()
        offsets = torch.stack([torch.randint(0, cell[0], (n,), generator=gen),
                               torch.randint(0, cell[1], (n,), generator=gen)], dim=1)
        return cls(grids.to(device), offsets.to(device), size)

    def __len__(self) -> int:
        return self.grids.shape[0]

    def __call__(self, first: int, last: int) -> Tensor:
        """Masks ``first..last-1`` at input size: (last - first, H, W) in [0, 1]."""
        h, w = self.size
        grid = self.grids.shape[-1]
        up = ((grid + 1) * math.ceil(h / grid), (grid + 1) * math.ceil(w / grid))
        big = F.interpolate(self.grids[first:last], size=up, mode="bilinear", align_corners=False)
        n = big.shape[0]
        dy, dx = self.offsets[first:last, 0], self.offsets[first:last, 1]
        ys = (dy[:, None] + torch.arange(h, device=big.device))[:, :, None]  # (n, H, 1)
        xs = (dx[:, None] + torch.arange(w, device=big.device))[:, None, :]  # (n, 1, W)
        return big[torch.arange(n, device=big.device)[:, None, None], 0, ys, xs]  # (n, H, W)


@register
class RISE(PerturbationMethod):
    name = "rise"
    summary = "RISE: the mean of random smooth masks, each weighted by the target score of the masked image."
    paper = "Petsiuk et al., RISE: Randomized Input Sampling for Explanation, BMVC 2018 (arXiv:1806.07421)"
    signed = False
    options = {
        "masks": Option(2000, "number of random masks N", minimum=1),
        "grid": Option(7, "cells per side of the random grid before upsampling (s)", minimum=1),
        "p": Option(0.5, "probability that a grid cell keeps the image", minimum=0.0),
        "seed": Option(0, "random seed of the masks (shared by every image)", minimum=0),
        **PERTURBATION_OPTIONS,
    }

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any], key: str = "options") -> dict[str, Any]:
        opts = super().resolve_options(given, key)
        if not 0 < opts["p"] <= 1:
            raise ConfigError(f"{key}.p", f"must be in (0, 1], got {opts['p']}")
        return opts

    def masks(self, size: tuple[int, int], device: torch.device | str = "cpu") -> RiseMasks:
        """The masks this method uses on inputs of ``size`` (H, W)."""
        o = self.opts
        return RiseMasks.draw(o["masks"], o["grid"], o["p"], o["seed"], size, torch.device(device))

    def attribute(self, x: Tensor, fill: Tensor, tgt: Tensor, clean: Tensor, call: Call) -> RawMaps:
        b, _, h, w = x.shape
        k = tgt.shape[1]
        dev = x.device
        masks = self.masks((h, w), dev)
        rows = torch.arange(len(masks) * b, device=dev) % b  # (R,) mask-major: mask r // B on image r % B

        def keep(start: int, stop: int) -> Tensor:
            first = start // b
            upsampled = masks(first, (stop - 1) // b + 1)  # only the masks of this chunk
            return upsampled[torch.arange(start, stop, device=dev) // b - first, None]  # (n, 1, H, W)

        saliency = torch.zeros((b * k, h * w), device=dev)  # (B K, H W)
        for start, stop, m, s in self.perturbed_scores(x, fill, rows, keep, tgt, call.chunk_size):
            n = stop - start
            weights = torch.zeros((n, b, k), device=dev)
            weights[torch.arange(n, device=dev), rows[start:stop]] = s  # row i scores only its image
            saliency += weights.view(n, b * k).T @ m.view(n, h * w).float()
        saliency /= len(masks) * self.opts["p"]
        return RawMaps(saliency.view(b, k, h, w))
