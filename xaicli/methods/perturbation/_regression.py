"""The surrogate fits of LIME and Kernel SHAP: small weighted least-squares problems, solved on the device.

Shapes: ``z`` (P, M) the coalitions (1 = superpixel kept), ``y`` (P, K) the scores of the K targets
(one fit per target, all sharing ``z`` and the weights), ``w`` (P,) sample weights. Everything in float64
(float32 on devices without it): M is small (tens of superpixels), so the normal equations cost nothing
next to the P forward passes, and float64 keeps them exact enough for parity with scikit-learn.
Symmetric systems are solved with the pseudo-inverse, which also gives the minimum-norm answer when
the samples do not determine every coefficient (too few samples, a superpixel always on), as
scikit-learn's least-squares solvers do.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _solve_symmetric(a: Tensor, b: Tensor) -> Tensor:
    """``pinv(a) @ b`` for a symmetric positive semi-definite (M, M) ``a`` and (M, K) ``b``."""
    return torch.linalg.pinv(a, hermitian=True) @ b


def weighted_ridge(z: Tensor, y: Tensor, w: Tensor, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """Ridge regression with an unpenalised intercept, as ``sklearn.linear_model.Ridge(alpha)
    .fit(z, y, sample_weight=w)``:

        minimise  sum_s w_s (y_s - c - z_s . beta)^2 + alpha |beta|^2

    solved by centring on the weighted means and ``(Zc^T W Zc + alpha I) beta = Zc^T W yc``.
    Returns ``beta`` (M, K), the intercept (K,) and the weighted R^2 of the fit (K,) (lime's ``score``;
    1 when the scores do not vary at all).
    """
    total = w.sum()
    z_mean = (w @ z) / total  # (M,)
    y_mean = (w @ y) / total  # (K,)
    zc, yc = z - z_mean, y - y_mean  # (P, M), (P, K)
    wz = zc * w[:, None]
    a = zc.T @ wz + alpha * torch.eye(z.shape[1], dtype=z.dtype, device=z.device)  # (M, M)
    beta = _solve_symmetric(a, wz.T @ yc)  # (M, K)
    intercept = y_mean - z_mean @ beta  # (K,)
    residual = w @ (yc - zc @ beta) ** 2  # (K,)
    spread = w @ yc**2  # (K,)
    r2 = torch.where(spread > 0, 1 - residual / spread.clamp_min(torch.finfo(y.dtype).tiny),
                     torch.ones_like(spread))
    return beta, intercept, r2


def constrained_least_squares(z: Tensor, y: Tensor, w: Tensor, empty: Tensor, full: Tensor) -> Tensor:
    """Kernel SHAP's regression (Lundberg & Lee 2017, Theorem 2) with its end points as exact constraints:

        minimise  sum_s w_s (y_s - phi_0 - z_s . phi)^2   subject to   phi_0 = f(empty),
                                                                        sum_i phi_i = f(x) - f(empty)

    (the kernel's infinite weight on the empty and the full coalition). ``empty``/``full`` (K,) are the
    scores with every superpixel filled / kept. The sum constraint is eliminated by writing
    ``phi_M = delta - sum_{i<M} phi_i``, leaving an unconstrained weighted least-squares problem in M - 1
    unknowns. Returns ``phi`` (M, K); ``phi.sum(0) == full - empty`` up to rounding (efficiency).
    """
    delta = full - empty  # (K,)
    if z.shape[1] == 1:
        return delta[None].clone()
    last = z[:, -1:]  # (P, 1)
    d = z[:, :-1] - last  # (P, M-1)
    t = y - empty - last * delta  # (P, K)
    wd = d * w[:, None]
    head = _solve_symmetric(d.T @ wd, wd.T @ t)  # (M-1, K)
    return torch.cat([head, (delta - head.sum(0))[None]])
