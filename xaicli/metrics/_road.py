"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, A Consistent and Efficient
Evaluation Strategy for Attribution Methods, ICML 2022, arXiv:2202.00449), in pytorch-grad-cam's
convention (``pytorch_grad_cam.metrics.road``).

For each percentile p of ``percentiles`` (default 10, 20, ..., 90):

* MoRF (most relevant first) removes the pixels whose map value is not below the p-th percentile of
  the map (``map >= percentile(map, p)``); LeRF (least relevant first) those whose ``1 - map`` is not
  below the p-th percentile of ``1 - map``;
* the removed pixels are filled by *noisy linear imputation* (sec. 4.2): each removed pixel is the
  weighted mean of its 8 neighbours (weights 1/6 for the 4 direct and 1/12 for the 4 diagonal ones,
  renormalised at the image border), which couples all removed pixels into one sparse linear system
  per image and channel; then Gaussian noise of standard deviation ``noise`` is added to them;
* the score is the target's softmax probability after imputation minus before.

The metric's value is the mean over the percentiles (pytorch-grad-cam's ``ROAD*Average``); the row's
``curve`` holds the per-percentile differences. For MoRF lower is better (removing the relevant pixels
should hurt), for LeRF higher (removing the irrelevant ones should not).

The linear systems are solved batched on the device: every (image, target, percentile) and channel at
once, by conjugate gradients preconditioned with a geometric multigrid V-cycle, the matrix applied as a
3 x 3 convolution (the system is symmetric positive definite when every hole touches a known pixel),
to a relative residual of ``tolerance``. With ``noise: 0`` the result equals pytorch-grad-cam's
one-``scipy.sparse.linalg.spsolve``-per-image version (a test checks it to 1e-3). A hole without any
known pixel around it (e.g. a constant map, where every pixel is removed) has no information to
impute from: it is filled with 0, the dataset mean in normalised space, where ``spsolve`` meets a
singular matrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from xaicli.errors import ConfigError
from xaicli.methods import Option
from xaicli.metrics.base import Metric, MetricInput, MetricResult, image_generator, target_probs

#: The 8-neighbour weights of the paper's imputation (direct neighbours 1/6, diagonal ones 1/12).
NEIGHBOUR_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))

ROAD_OPTIONS: dict[str, Option] = {
    "percentiles": Option([10, 20, 30, 40, 50, 60, 70, 80, 90], "percentiles of the map that set how many "
                          "pixels are removed (each 0 < p < 100); the value is the mean over them"),
    "noise": Option(0.01, "standard deviation of the noise added to imputed pixels (normalised units); 0 "
                    "reproduces pytorch-grad-cam's NoisyLinearImputer(noise=0)", minimum=0.0),
    "seed": Option(0, "seed of the noise (per image, so values do not depend on batching)", minimum=0),
    "tolerance": Option(1e-5, "relative residual at which the imputation's linear solver stops",
                        minimum=0.0),
}


def _neighbour_sum(t: Tensor) -> Tensor:
    """(N, C, H, W) -> weighted sum of each pixel's 8 neighbours (zero outside the image)."""
    c = t.shape[1]
    k = torch.tensor(NEIGHBOUR_WEIGHTS, device=t.device, dtype=t.dtype).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    return F.conv2d(t, k, padding=1, groups=c)


class _Level:
    """One grid of the multigrid hierarchy: its unknown pixels ``m`` (N, 1, h, w) and the system matrix
    ``A u = m (D u - W (m u))`` (D: in-image neighbour weight sums, (1, C, h, w))."""

    def __init__(self, m: Tensor, channels: int):
        self.m = m
        h, w = m.shape[-2:]
        self.diag = _neighbour_sum(torch.ones((1, channels, h, w), device=m.device, dtype=m.dtype))

    def apply(self, u: Tensor) -> Tensor:
        return self.m * (self.diag * u - _neighbour_sum(self.m * u))

    def coarser(self) -> _Level:
        """Half the resolution; a coarse pixel is unknown when all of its 2 x 2 fine pixels are (so
        isolated known pixels, which pin the solution, survive coarsening)."""
        return _Level(-F.max_pool2d(-self.m, 2, ceil_mode=True), self.diag.shape[1])


_SMOOTH_WEIGHT = 0.8  # weighted Jacobi
_SWEEPS = 1  # Jacobi sweeps before and after each coarse correction
_COARSEST = 4  # grids smaller than this (either side) are not coarsened further
_COARSEST_SWEEPS = 10


def _prolong(coarse: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear interpolation to the finer grid (half-pixel centres, edges clamped: constants stay
    constant up to the image border, where the holes of a CAM's most relevant pixels often reach)."""
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def _restrict(fine: Tensor, size: tuple[int, int]) -> Tensor:
    """The transpose of :func:`_prolong` (so the V-cycle, and the preconditioner, stay symmetric)."""
    return torch.ops.aten.upsample_bilinear2d_backward(fine, list(fine.shape[-2:]),
                                                       [*fine.shape[:2], *size], False, None, None)


def _v_cycle(levels: list[_Level], r: Tensor, i: int = 0) -> Tensor:
    """One multigrid V-cycle from zero for ``A z = r`` on level ``i``: weighted Jacobi smoothing, the
    residual restricted to the next grid (which holds the same stencil, rediscretised), the correction
    interpolated back. A symmetric positive definite operator: usable as a CG preconditioner."""
    lv = levels[i]
    w_over_d = _SMOOTH_WEIGHT / lv.diag
    sweeps = _COARSEST_SWEEPS if i == len(levels) - 1 else _SWEEPS
    z = w_over_d * r
    for _ in range(sweeps - 1):
        z = z + w_over_d * (r - lv.apply(z))
    if i == len(levels) - 1:
        return z
    nxt = levels[i + 1]
    size = tuple(nxt.m.shape[-2:])
    coarse_r = nxt.m * _restrict(r - lv.apply(z), size)
    z = z + lv.m * _prolong(_v_cycle(levels, coarse_r, i + 1), tuple(lv.m.shape[-2:]))
    for _ in range(sweeps):
        z = z + w_over_d * (r - lv.apply(z))
    return z


def linear_impute(x: Tensor, missing: Tensor, tol: float = 1e-5, max_iter: int = 200) -> Tensor:
    """Fill the ``missing`` pixels of (N, C, H, W) ``x`` ((N, H, W) bool) by the ROAD linear imputation.

    Unknowns u on the missing pixels solve, per image and channel, ``D u - W_mm u = W_mk v``: D the sum
    of a pixel's in-image neighbour weights, W_mm the weights between missing pixels, W_mk v the
    weighted known neighbours (pytorch-grad-cam's ``setup_sparse_system``, times -1). Solved for all
    images and channels at once by conjugate gradients preconditioned with a geometric multigrid
    V-cycle (plain conjugate gradients would need about as many iterations as a hole is wide), until
    every residual is below ``tol`` times its right-hand side or after ``max_iter`` iterations.
    """
    n, c, h, w = x.shape
    m = missing[:, None].to(x.dtype)  # (N, 1, H, W)
    known = x * (1 - m)
    levels = [_Level(m, c)]
    while min(levels[-1].m.shape[-2:]) >= 2 * _COARSEST:
        levels.append(levels[-1].coarser())
    fine = levels[0]
    b = m * _neighbour_sum(known)  # (N, C, H, W), zero off the missing pixels

    def dot(a: Tensor, b_: Tensor) -> Tensor:
        return (a * b_).sum(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)

    u = torch.zeros_like(x)
    r = b.clone()
    z = _v_cycle(levels, r)
    p = z
    rz = dot(r, z)
    b_norm = dot(b, b).sqrt()
    for _ in range(max_iter):
        if bool((dot(r, r).sqrt() <= tol * b_norm).all()):
            break
        ap = fine.apply(p)
        pap = dot(p, ap)
        alpha = torch.where(pap > 0, rz / pap.clamp_min(1e-30), torch.zeros_like(pap))
        u = u + alpha * p
        r = r - alpha * ap
        z = _v_cycle(levels, r)
        rz_new = dot(r, z)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-30), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    return known + m * u


def removal_masks(maps: Tensor, percentiles: Tensor, most_relevant_first: bool) -> Tensor:
    """(R, H, W) maps -> (R, P, H, W) bool: the pixels ROAD removes at each percentile.

    MoRF: ``map >= percentile(map, p)``; LeRF: ``1 - map >= percentile(1 - map, p)`` (numpy's linear
    interpolation, as ``np.percentile``)."""
    scores = maps if most_relevant_first else 1 - maps
    flat = scores.flatten(1)  # (R, HW)
    thresholds = torch.quantile(flat, percentiles.to(flat) / 100, dim=1).T  # (R, P)
    return scores[:, None] >= thresholds[:, :, None, None]


class ROADMetric(Metric):
    """MoRF or LeRF; the subclasses only say which (see the module docstring)."""

    family = "faithfulness"
    most_relevant_first: ClassVar[bool]
    options = ROAD_OPTIONS

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any] | None, key: str = "options") -> dict[str, Any]:
        opts = super().resolve_options(given, key)
        ps = opts["percentiles"]
        if not ps or not all(isinstance(p, int | float) and not isinstance(p, bool) and 0 < p < 100
                             for p in ps):
            raise ConfigError(f"{key}.percentiles", f"expected a list of numbers between 0 and 100 "
                              f"(exclusive), got {ps!r}")
        return {**opts, "percentiles": [float(p) for p in ps]}

    def compute(self, inp: MetricInput) -> MetricResult:
        x, maps, targets = inp.x, inp.maps, inp.targets
        b, k, h, w = maps.shape
        ps = torch.tensor(self.opts["percentiles"], dtype=torch.float64)
        n_p = len(ps)
        before = inp.probs if inp.probs is not None else _probs_all(inp.model, x, targets, inp.chunk_size)
        removed = removal_masks(maps.view(b * k, h, w), ps, self.most_relevant_first)  # (B*K, P, H, W)
        removed = removed.view(b, k * n_p, h, w)
        noise_sd = self.opts["noise"]
        rows_per_image = k * n_p
        after = torch.empty((b, rows_per_image), device=x.device)
        # images in groups so that one group's rows fill about one chunk
        group = max(1, inp.chunk_size // rows_per_image)
        for s in range(0, b, group):
            img = torch.arange(s, min(s + group, b), device=x.device)
            rows_x = x[img].repeat_interleave(rows_per_image, dim=0)  # (g*K*P, C, H, W)
            miss = removed[img].flatten(0, 1)  # (g*K*P, H, W)
            filled = linear_impute(rows_x, miss, self.opts["tolerance"])
            if noise_sd > 0:
                seed = self.opts["seed"]
                draws = torch.stack([torch.randn((rows_per_image, *x.shape[1:]), device=x.device,
                                                 generator=image_generator(seed, int(i), x.device))
                                     for i in inp.ids[img.cpu()].tolist()]).flatten(0, 1)
                filled = filled + noise_sd * draws * miss[:, None].to(draws.dtype)
            t = targets[img].repeat_interleave(n_p, dim=1).reshape(-1)  # (g*K*P,)
            after[img] = target_probs(inp.model, filled, t, inp.chunk_size).view(len(img), rows_per_image)
        diffs = after.view(b, k, n_p) - before.view(b, k, 1)
        return MetricResult(diffs.mean(-1), {"curve": diffs})


def _probs_all(model: Any, x: Tensor, targets: Tensor, chunk: int) -> Tensor:
    """(B, K) softmax probabilities of the targets on the clean inputs."""
    return torch.cat([model(x[s : s + chunk]).float().softmax(dim=1).gather(1, targets[s : s + chunk])
                      for s in range(0, x.shape[0], chunk)])
