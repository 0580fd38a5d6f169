"""Similarity of two batches of maps, on the device: Spearman rank correlation and SSIM.

Both are what Adebayo et al. 2018 (Sanity Checks for Saliency Maps, sec. 3) compare maps with, and
what Quantus' ``correlation_spearman`` / ``ssim`` compute with SciPy and scikit-image one pair at a time.
Here every pair of a batch is computed at once. Undefined values (a constant map has no ranking) are NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def average_ranks(x: Tensor) -> Tensor:
    """(N, P) -> (N, P) ranks 1..P per row, ties given their average rank (``scipy.stats.rankdata``'s
    default), computed without a Python loop: the start and end of each run of equal sorted values."""
    n, p = x.shape
    values, order = x.sort(dim=1, stable=True)
    pos = torch.arange(p, device=x.device).expand(n, p)
    new_run = torch.ones_like(values, dtype=torch.bool)
    new_run[:, 1:] = values[:, 1:] != values[:, :-1]
    # first position of each run, carried forward; last position, carried backward
    start = torch.where(new_run, pos, torch.zeros_like(pos)).cummax(dim=1).values
    run_end = torch.ones_like(new_run)
    run_end[:, :-1] = new_run[:, 1:]
    end_pos = torch.where(run_end, pos, torch.full_like(pos, p - 1))
    end = end_pos.flip(1).cummin(dim=1).values.flip(1)
    ranks_sorted = (start + end).to(torch.float64) / 2 + 1
    return torch.empty_like(ranks_sorted).scatter_(1, order, ranks_sorted)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation of (N, P) tensors, in float64; NaN where a row is constant."""
    a = a.to(torch.float64) - a.to(torch.float64).mean(dim=1, keepdim=True)
    b = b.to(torch.float64) - b.to(torch.float64).mean(dim=1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(dim=1) / denom
    return torch.where(denom > 0, r, torch.full_like(r, float("nan"))).clamp(-1, 1)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each pair of maps: (N, ...) x (N, ...) -> (N,) float64.

    Pearson correlation of the average ranks (Spearman 1904; ``scipy.stats.spearmanr``); NaN when
    either map is constant.
    """
    return pearson(average_ranks(a.flatten(1)), average_ranks(b.flatten(1)))


def ssim_window(height: int, width: int, win_size: int = 7) -> int:
    """The SSIM window: ``win_size``, or the largest odd size that fits a smaller map."""
    fit = min(win_size, height, width)
    return fit if fit % 2 else fit - 1


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0, win_size: int = 7, k1: float = 0.01,
         k2: float = 0.03) -> Tensor:
    """Mean structural similarity (Wang et al. 2004, eq. 13) of each pair of (N, H, W) maps -> (N,).

    scikit-image's ``structural_similarity`` defaults: a uniform ``win_size`` x ``win_size`` window,
    sample covariances (normalised by ``win^2 - 1``), C1 = (k1 L)^2, C2 = (k2 L)^2 with L = ``data_range``,
    and the mean over the windows that fit inside the map (scikit-image filters with reflection and
    then crops ``(win - 1) / 2`` pixels from every side, which leaves exactly those windows). Maps
    smaller than the window use the largest odd window that fits.
    """
    x = a.to(torch.float64).flatten(0, -3)[:, None]  # (N, 1, H, W)
    y = b.to(torch.float64).flatten(0, -3)[:, None]
    win = ssim_window(x.shape[-2], x.shape[-1], win_size)
    if win < 1:
        return torch.full((x.shape[0],), float("nan"), dtype=torch.float64, device=x.device)
    n_px = win * win
    cov_norm = n_px / (n_px - 1) if n_px > 1 else 1.0

    def mean(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, win, stride=1)

    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)


def topk_iou(a: Tensor, b: Tensor, fraction: float = 0.1) -> Tensor:
    """Intersection over union of the top ``fraction`` of pixels of each pair of maps: (N, ...) -> (N,).

    The "same region" question a reviewer asks of two heatmaps, insensitive to how the rest of the map is
    ranked. ``k = max(1, round(fraction * P))`` pixels per map, chosen by value (ties broken by position,
    so the count is exactly ``k``): IoU = |A ∩ B| / |A ∪ B| = |A ∩ B| / (2k - |A ∩ B|).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    x, y = a.flatten(1).to(torch.float64), b.flatten(1).to(torch.float64)
    k = max(1, round(fraction * x.shape[1]))
    top_a = torch.zeros_like(x, dtype=torch.bool).scatter_(1, x.topk(k, dim=1, sorted=False).indices, True)
    top_b = torch.zeros_like(y, dtype=torch.bool).scatter_(1, y.topk(k, dim=1, sorted=False).indices, True)
    inter = (top_a & top_b).sum(dim=1).to(torch.float64)
    return inter / (2 * k - inter)
