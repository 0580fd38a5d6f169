"""What deletion and insertion share: the pixel order, the step schedule, the curve and its area, and
the RISE blur (Petsiuk, Das & Saenko, RISE, BMVC 2018, sec. 4.1 "causal metrics", and its authors'
``CausalMetric`` in ``evaluation.py``).

For a map of H x W pixels and ``steps`` requested steps:

* order: pixels by decreasing map value, ties by ascending pixel index (a stable sort of the negated
  map); ``rank[p]`` is pixel p's position in that order;
* ``step = ceil(HW / steps)`` pixels per step and ``n = ceil(HW / step)`` steps; after step i the
  pixels with ``rank < i * step`` come from the *finish* image, the others from the *start* image
  (deletion: start = input, finish = substrate; insertion: start = blurred input, finish = input);
  all channels of a pixel at once, in the normalised input tensor;
* curve: the target's softmax probability after each step i = 0..n (n + 1 values);
* score: the trapezoid area with unit spacing, normalised to [0, 1]:
  ``(sum(curve) - curve[0] / 2 - curve[n] / 2) / n``.

Step 0 is the start image and step n the finish image for every map of an image, so those two forward
passes are made once per image and shared by all its targets and methods; the n - 1 steps in between
are built on the fly, ``chunk_size`` rows per forward pass, from the per-map ranks (no (n, C, H, W)
stack is ever stored).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xaicli.errors import ConfigError
from xaicli.methods import Option
from xaicli.metrics.base import probs_of_rows

STEPS_OPTION = Option(100, "number of steps: step = ceil(H*W / steps) pixels each, n = ceil(H*W / step) "
                      "steps, n + 1 probabilities", minimum=1)
BLUR_OPTIONS = {
    "blur_kernel": Option(11, "side of the RISE blur kernel (odd)", minimum=1),
    "blur_sigma": Option(5.0, "sigma of the RISE blur kernel, in pixels", minimum=0.0),
}


def check_blur_options(opts: dict, key: str) -> dict:
    """The blur kernel must have a centre pixel (odd side), as RISE's ``padding=klen // 2`` assumes."""
    if opts["blur_kernel"] % 2 == 0:
        raise ConfigError(f"{key}.blur_kernel", f"must be odd, got {opts['blur_kernel']}")
    return opts


def schedule(height: int, width: int, steps: int) -> tuple[int, int]:
    """(pixels per step, number of steps n) for an H x W map, as the RISE authors' ``single_run``."""
    hw = height * width
    step = math.ceil(hw / steps)
    return step, (hw + step - 1) // step


def pixel_ranks(maps: Tensor) -> Tensor:
    """(B, K, H, W) maps -> (B, K, H*W) rank of each pixel (0 = highest value; ties: lower index first)."""
    flat = maps.flatten(2)
    order = torch.argsort(-flat, dim=-1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(flat.shape[-1], device=maps.device).expand_as(order))
    return ranks


def causal_auc(curves: Tensor) -> Tensor:
    """(..., n + 1) curves -> (...) normalised trapezoid areas (the RISE authors' ``auc``)."""
    n = curves.shape[-1] - 1
    return (curves.sum(-1) - curves[..., 0] / 2 - curves[..., -1] / 2) / max(n, 1)


def causal_curves(model: nn.Module, start: Tensor, finish: Tensor, maps: Tensor, targets: Tensor, steps: int,
                  chunk: int) -> Tensor:
    """(B, K, n + 1) curves: start/finish (B, C, H, W) images, maps (B, K, H, W), targets (B, K)."""
    b, k, h, w = maps.shape
    step, n = schedule(h, w, steps)
    device = start.device
    ranks = pixel_ranks(maps).view(b * k, h, w)  # (B*K, H, W)
    rows_t = targets.reshape(b * k)
    # the two ends, once per image (shared by all its targets): (B, K) each
    first, last = _probs_all(model, start, targets, chunk), _probs_all(model, finish, targets, chunk)
    curves = torch.empty((b * k, n + 1), device=device)
    curves[:, 0], curves[:, n] = first.reshape(-1), last.reshape(-1)
    inner = n - 1  # steps 1 .. n-1
    if inner > 0:
        def make_rows(idx: Tensor) -> Tensor:
            m, i = idx // inner, idx % inner + 1  # map row, step
            img = m // k
            replaced = ranks[m] < (i * step).view(-1, 1, 1)  # (n, H, W)
            return torch.where(replaced[:, None], finish[img], start[img])

        rows = torch.arange(b * k * inner, device=device)
        probs = probs_of_rows(model, b * k * inner, make_rows, rows_t[rows // inner], chunk)
        curves[:, 1:n] = probs.view(b * k, inner)
    return curves.view(b, k, n + 1)


def _probs_all(model: nn.Module, images: Tensor, targets: Tensor, chunk: int) -> Tensor:
    """(B, K) probabilities of every target of each image, one forward pass per image."""
    out = []
    for s in range(0, images.shape[0], chunk):
        out.append(model(images[s : s + chunk]).float().softmax(dim=1).gather(1, targets[s : s + chunk]))
    return torch.cat(out)


def gaussian_filter_1d_of_delta(length: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter1d`` of a centred delta of ``length`` samples (mode 'reflect':
    d c b a | a b c d | d c b a, repeated while the kernel reaches further than the array)."""
    delta = np.zeros(length)
    delta[length // 2] = 1.0
    if sigma <= 0:
        return delta
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / sigma**2 * x**2)
    phi /= phi.sum()
    padded = np.pad(delta, radius, mode="symmetric")  # scipy's 'reflect' is numpy's 'symmetric'
    return np.correlate(padded, phi, mode="valid")


def rise_kernel(klen: int = 11, sigma: float = 5.0) -> Tensor:
    """The RISE authors' ``gkern(klen, nsig)``: ``gaussian_filter`` (sigma, default truncation 4,
    reflect mode) of a centred delta in a klen x klen array; separable, so the outer product of the
    1-D filter of a delta with itself."""
    k1 = gaussian_filter_1d_of_delta(klen, sigma)
    return torch.from_numpy(np.outer(k1, k1).astype(np.float32))


def rise_blur(x: Tensor, klen: int = 11, sigma: float = 5.0) -> Tensor:
    """Blur (B, C, H, W) per channel with :func:`rise_kernel`, zero padding ``klen // 2`` (as RISE's
    ``conv2d(x, kern, padding=klen // 2)`` with a diagonal channel kernel)."""
    c = x.shape[1]
    kern = rise_kernel(klen, sigma).to(x.device, x.dtype)
    weight = kern.expand(c, 1, klen, klen)
    return F.conv2d(x, weight, padding=klen // 2, groups=c)
