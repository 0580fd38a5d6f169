"""Timing records, synthetic inputs and map agreement for the benchmark.

Every measurement (:func:`benchmarks.suite.measure_pair`) is a median over timed repeats after an
untimed warm-up (lazy initialisation, oneDNN/cuDNN primitive selection and allocator growth happen
there), taken with ``time.perf_counter`` around a call that ends with the results on the host (CUDA is
synchronised).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Timing:
    """Seconds of each timed repeat of a call that processes ``images`` images."""

    seconds: list[float]
    images: int
    last: object = None  # output of the last timed call (for the agreement check)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        """Images per second at the median time."""
        return self.images / self.median


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_images(n: int, size: tuple[int, int], seed: int = 0, channels: int = 3) -> Tensor:
    """(n, C, H, W) display images in [0, 1]: smooth random colour fields with some texture.

    Smooth structure (low-resolution noise upsampled) gives CAMs and gradients something to find; the
    exact content does not matter for timing, only that both libraries see the same pixels.
    """
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    coarse = torch.rand((n, channels, max(2, h // 32), max(2, w // 32)), generator=gen)
    img = F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    img = img + 0.08 * torch.randn((n, channels, h, w), generator=gen)
    return img.clamp(0, 1).contiguous()


def pearson(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """Mean over images of the Pearson correlation of two (N, H, W) map stacks (NaN-free: constant -> 0)."""
    x = torch.as_tensor(np.asarray(a), dtype=torch.float64).flatten(1)
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64).flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    denom = (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-300)
    return float(((x * y).sum(dim=1) / denom).mean())
