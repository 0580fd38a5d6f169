"""Seeded random draws per sample index, independent of how images are batched and samples are chunked.

The Monte-Carlo methods (SmoothGrad's noise, GradientSHAP's baselines, path points and noise) draw, for
each sample ``s``, a few tensors of one image's shape, made in sample order from one generator seeded with
the method's ``seed`` and shared by every image of the batch. Draw ``s`` is then the same whatever the
batch holds and however the engine chunks the ``samples x B`` rows (it may shrink both after an
out-of-memory error), so an image's map depends only on the image, the options and the seed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class SampleDraws:
    """``draw(generator)`` -> a tuple of tensors, called once per sample index, in order."""

    def __init__(self, seed: int, device: torch.device,
                 draw: Callable[[torch.Generator], tuple[Tensor, ...]]) -> None:
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.draw = draw
        self.made = 0  # samples drawn so far
        self.kept: dict[int, tuple[Tensor, ...]] = {}  # the draws a later chunk may still need

    def draws(self, first: int, last: int) -> tuple[Tensor, ...]:
        """The draws of samples ``first..last``, each stacked to (last - first + 1, ...); chunks must move
        forward (``first`` at least the previous ``last``)."""
        if first < min(self.kept, default=self.made):
            raise ValueError(f"sample {first} was drawn and dropped already; chunks must move forward")
        while self.made <= last:
            self.kept[self.made] = self.draw(self.generator)
            self.made += 1
        out = tuple(torch.stack(parts) for parts in zip(*(self.kept[s] for s in range(first, last + 1)),
                                                        strict=True))
        self.kept = {last: self.kept[last]}  # only the last sample can continue into the next chunk
        return out
