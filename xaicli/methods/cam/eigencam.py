"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299).

The layer's activations projected on their first principal component, with no gradient and no class:
with ``M`` the (h*w, C) activations of one image, centred per channel over positions (as pytorch-grad-cam
does; the paper does not mention centring) and ``M = U S V^T`` its singular value decomposition,

    L = ReLU(M v_1)         (v_1: the first right singular vector; M v_1 = s_1 u_1)

The map does not depend on the target: every target of an image gets the same map.

Sign: a singular vector is defined up to its sign, and SVD routines pick one arbitrarily (NumPy and
PyTorch often disagree on the same activations), so a plain ``ReLU(M v_1)`` shows either the
salient region or its complement by chance. xaicli orients ``v_1`` so that the map correlates positively
with the summed activations ``sum_k A^k`` (equivalently ``sum_k v_1k >= 0``: since ``M^T M v_1 =
s_1^2 v_1``, the correlation ``<M v_1, M 1> = s_1^2 sum_k v_1k``): positive where the channels fire
together. pytorch-grad-cam keeps whatever sign its NumPy SVD returns; where that sign is the other one,
its map is the ReLU of the negated projection (the parity test orients its projection the same way).
"""

from __future__ import annotations

import torch
from torch import Tensor

from xaicli.methods.base import Call
from xaicli.methods.cam.base import ForwardCAM
from xaicli.methods.registry import register


def principal_projection(acts: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, h, w): the centred activations projected on their first principal component,
    oriented to correlate positively with the summed activations (see the module docstring).

    ``M v_1 = s_1 u_1`` comes from the eigendecomposition of the smaller Gram matrix, ``M M^T`` (h*w
    square) or ``M^T M`` (C square): the same vector as the SVD's, an order of magnitude faster on the
    CPU (a 7x7x512 map: 49x49 instead of an SVD of 49x512).
    """
    b, c, h, w = acts.shape
    m = acts.flatten(2).transpose(1, 2).float()  # (B, h*w, C)
    m = m - m.mean(dim=1, keepdim=True)  # centre each channel over positions
    if h * w <= c:
        values, vectors = torch.linalg.eigh(m @ m.transpose(1, 2))  # (B, hw), (B, hw, hw); ascending
        proj = vectors[..., -1] * values[:, -1:].clamp_min(0).sqrt()  # s_1 u_1, (B, hw)
    else:
        _, vectors = torch.linalg.eigh(m.transpose(1, 2) @ m)  # (B, C, C)
        proj = (m @ vectors[..., -1:])[..., 0]  # M v_1, (B, hw)
    agreement = (proj * m.sum(dim=2)).sum(dim=1, keepdim=True)  # <M v_1, M 1> = s_1^2 sum_k v_1k
    return torch.where(agreement < 0, -proj, proj).view(b, h, w)


@register
class EigenCAM(ForwardCAM):
    name = "eigencam"
    summary = "Eigen-CAM: the activations' first principal component (class-agnostic, no gradients)."
    paper = "Muhammad & Yeasin, Eigen-CAM, IJCNN 2020 (arXiv:2008.00299)"

    def layer_cam(self, x: Tensor, layer: str, acts: Tensor, logits: Tensor, tgt: Tensor,
                  call: Call) -> Tensor:
        cam = torch.relu(principal_projection(acts))  # (B, h, w)
        return cam[:, None].expand(-1, tgt.shape[1], -1, -1)  # (B, K, h, w): the same map for every target
