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
    oriented so that ``sum_k v_1k >= 0`` (see the module docstring)."""
    b, c, h, w = acts.shape
    m = acts.flatten(2).transpose(1, 2).float()  # (B, h*w, C)
    m = m - m.mean(dim=1, keepdim=True)  # centre each channel over positions
    _, _, vh = torch.linalg.svd(m, full_matrices=False)  # vh: (B, min(hw, C), C)
    v1 = vh[:, 0]  # (B, C)
    sign = torch.where(v1.sum(dim=1, keepdim=True) < 0, -1.0, 1.0).to(v1.dtype)  # (B, 1)
    proj = torch.einsum("bpc,bc->bp", m, v1 * sign)  # (B, h*w)
    return proj.view(b, h, w)


@register
class EigenCAM(ForwardCAM):
    name = "eigencam"
    summary = "Eigen-CAM: the activations' first principal component (class-agnostic, no gradients)."
    paper = "Muhammad & Yeasin, Eigen-CAM, IJCNN 2020 (arXiv:2008.00299)"

    def layer_cam(self, x: Tensor, layer: str, acts: Tensor, logits: Tensor, tgt: Tensor,
                  call: Call) -> Tensor:
        cam = torch.relu(principal_projection(acts))  # (B, h, w)
        return cam[:, None].expand(-1, tgt.shape[1], -1, -1)  # (B, K, h, w): the same map for every target
