"""Occlusion sensitivity (Zeiler & Fergus, ECCV 2014, arXiv:1311.2901; MATLAB occlusionSensitivity;
Captum ``Occlusion``).

A ``window`` of ``[h, w]`` pixels (default: 1/8 of each input side, rounded half up, at least 1) slides
over the image in steps of ``stride`` (default: half the window, at least 1), covering every channel;
each position p replaces the window by the fill (see :mod:`._base`) and records the drop of the
target's score, ``d_p = s(x) - s(x with window p filled)``. The attribution of a pixel is the mean drop
over the windows that cover it:

    A(u) = sum_p d_p [u in W_p] / sum_p [u in W_p]

Positions are ``0, s, 2s, ...`` along each side, ``ceil((H - h) / s) + 1`` of them, the last one
clipped at the border (Captum's rule), so every pixel is covered at least once; a stride larger than
the window would leave gaps and is reduced to the window. With ``score: logit`` and the same window,
stride and fill (``mean`` is Captum's default baseline 0) the maps equal Captum's ``Occlusion`` to float
precision. Drops can be negative (filling a region can raise the score), so maps are signed.

Cost: ``B * ceil((H - h) / s + 1) * ceil((W - w) / s + 1)`` forward passes per batch, independent of
the number of targets; the mean over covering windows is one transposed convolution of the drops.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xaicli.errors import ConfigError
from xaicli.methods.base import Call
from xaicli.methods.perturbation._base import PERTURBATION_OPTIONS, PairOption, PerturbationMethod, RawMaps
from xaicli.methods.registry import register


def _half_up(value: float) -> int:
    return int(value + 0.5)


@register
class Occlusion(PerturbationMethod):
    name = "occlusion"
    summary = "Occlusion sensitivity: the mean drop of the target score when a sliding window is filled."
    paper = ("Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014 "
             "(arXiv:1311.2901)")
    options = {
        "window": PairOption(None, "window [h, w] in pixels (one int: square); default 1/8 of each input "
                             "side"),
        "stride": PairOption(None, "step [h, w] between window positions, at most the window; default half "
                             "the window"),
        **PERTURBATION_OPTIONS,
    }

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any], key: str = "options") -> dict[str, Any]:
        opts = super().resolve_options(given, key)
        window, stride = opts["window"], opts["stride"]
        if window and stride and any(s > w for s, w in zip(stride, window, strict=True)):
            raise ConfigError(f"{key}.stride", f"stride {stride} is larger than the window {window}: pixels "
                              "between windows would never be occluded")
        return opts

    def geometry(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The window and stride (each (h, w)) used on inputs of ``height`` x ``width``."""
        window = self.opts["window"] or [max(1, _half_up(height / 8)), max(1, _half_up(width / 8))]
        wh, ww = min(window[0], height), min(window[1], width)
        stride = self.opts["stride"] or [max(1, wh // 2), max(1, ww // 2)]
        return (wh, ww), (min(stride[0], wh), min(stride[1], ww))

    def attribute(self, x: Tensor, fill: Tensor, tgt: Tensor, clean: Tensor, call: Call) -> RawMaps:
        b, _, h, w = x.shape
        k = tgt.shape[1]
        dev = x.device
        (wh, ww), (sh, sw) = self.geometry(h, w)
        tops = torch.arange(-(-(h - wh) // sh) + 1, device=dev) * sh  # (nh,) window rows
        lefts = torch.arange(-(-(w - ww) // sw) + 1, device=dev) * sw  # (nw,)
        nh, nw = len(tops), len(lefts)
        positions = nh * nw
        rows = torch.arange(b * positions, device=dev) // positions  # (R,) image-major rows
        ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)

        def keep(start: int, stop: int) -> Tensor:
            p = torch.arange(start, stop, device=dev) % positions
            top, left = tops[p // nw, None], lefts[p % nw, None]  # (n, 1)
            inside = (((ys >= top) & (ys < top + wh))[:, :, None]
                      & ((xs >= left) & (xs < left + ww))[:, None, :])  # (n, H, W)
            return (~inside)[:, None].float()

        scores = torch.empty((rows.shape[0], k), device=dev)  # (R, K)
        for start, stop, _, s in self.perturbed_scores(x, fill, rows, keep, tgt, call.chunk_size):
            scores[start:stop] = s
        drops = (clean[:, None] - scores.view(b, positions, k)).transpose(1, 2)  # (B, K, P)
        window = torch.ones((1, 1, wh, ww), device=dev)
        total = F.conv_transpose2d(drops.reshape(b * k, 1, nh, nw), window, stride=(sh, sw))
        count = F.conv_transpose2d(torch.ones((1, 1, nh, nw), device=dev), window, stride=(sh, sw))
        maps = total[..., :h, :w] / count[..., :h, :w]  # (B*K, 1, H, W): clipped windows, as Captum
        return RawMaps(maps.view(b, k, h, w))
