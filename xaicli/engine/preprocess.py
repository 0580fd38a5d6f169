"""Decode + resize on worker threads; normalisation happens batched on the device.

The worker returns the *display* image (resized, in [0, 1]); the engine normalises
``(x - mean) / std`` after the transfer, and the same tensor feeds the overlays, so the image under a
heatmap is exactly what the model saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from xaicli.engine.decode import Reserve, decode_pixels, unit_float
from xaicli.models.loader import channels_of
from xaicli.timing import NullClock, StageClock

_NO_CLOCK = NullClock()


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int]
    mode: str  # "L" or "RGB"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "exact"  # "exact": stretch to size; "shorter": shorter side to size, centre crop
    alpha_background: str = "black"

    @property
    def channels(self) -> int:
        return channels_of(self.mode)

    @property
    def decode_size(self) -> tuple[int, int]:
        """The smallest size a large image is decoded at: twice the model's input (either orientation),
        so the final antialiased resize still has two source pixels per output pixel."""
        side = 2 * max(self.size)
        return side, side

    def load(self, path: str, reserve: Reserve | None = None, clock: StageClock | None = None,
             fast: bool | None = None) -> Tensor:
        """File -> (C, H, W) float32 in [0, 1] at model-input size. Raises ImageDecodeError.

        Large images are decoded reduced to :attr:`decode_size` (see :mod:`xaicli.engine.decode`);
        ``reserve`` is the decode-memory budget's context manager factory; ``clock`` records the
        ``decode`` and ``resize`` stages; ``fast`` as in :func:`~xaicli.engine.decode.decode_pixels`."""
        clock = clock or _NO_CLOCK
        with clock.worker("decode"):
            arr = unit_float(decode_pixels(path, self.mode, self.alpha_background, self.decode_size, reserve,
                                           fast=fast))  # (h, w, C), any layout
        with clock.worker("resize"):
            img = torch.from_numpy(arr).permute(2, 0, 1)[None]  # (1, C, h, w)
            return self.resize_tensor(img)[0]

    def resize_tensor(self, img: Tensor) -> Tensor:
        h, w = img.shape[-2:]
        th, tw = self.size
        if self.resize == "shorter":
            scale = max(th / h, tw / w)
            nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
            img = _resize(img, (nh, nw))
            top, left = (nh - th) // 2, (nw - tw) // 2
            img = img[..., top : top + th, left : left + tw]
        else:
            img = _resize(img, (th, tw))
        return img.clamp(0, 1).contiguous()

    def normaliser(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(1, C, 1, 1) mean and std on ``device``."""
        c = self.channels
        mean = torch.tensor(self.mean * (c if len(self.mean) == 1 else 1), device=device).view(1, c, 1, 1)
        std = torch.tensor(self.std * (c if len(self.std) == 1 else 1), device=device).view(1, c, 1, 1)
        return mean, std


def _resize(img: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    # antialias so large photos shrink smoothly (like PIL), bilinear for upscaling small inputs
    return F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=True)
