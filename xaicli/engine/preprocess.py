"""Decode + resize on worker threads; normalisation happens batched on the device.

The worker returns the *display* image (resized, in [0, 1]); the engine normalises
``(x - mean) / std`` after the transfer, and the same tensor feeds the overlays, so the image under a
heatmap is exactly what the model saw.

``resize: shorter`` is torchvision's ``Resize(resize_size)`` followed by ``CenterCrop(size)``, computed
the way torchvision computes them on tensors: the shorter side becomes ``resize_size`` and the longer
``int(resize_size * long / short)`` (truncated, not rounded), resampling is antialiased
``F.interpolate`` (bilinear or bicubic), and the crop starts at ``int(round((H - h) / 2))`` (Python's
round, half to even), zero-padding first where the image is smaller than the crop. On the same float
image the result equals torchvision's to float precision (a test checks odd sizes). A user transform
(``preprocess.transform``) replaces all of this with the user's own pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from xaicli.engine.decode import Reserve, decode_pixels, unit_float
from xaicli.errors import ImageDecodeError
from xaicli.models.loader import LoadedModel, channels_of
from xaicli.models.transform import UserTransform
from xaicli.timing import NullClock, StageClock

_NO_CLOCK = NullClock()


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int]
    mode: str  # "L" or "RGB"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "exact"  # "exact": stretch to size; "shorter": Resize(resize_size) + CenterCrop(size)
    alpha_background: str = "black"
    resize_size: int | None = None  # shorter side before the crop (default: the crop's shorter side)
    interpolation: str = "bilinear"  # or "bicubic"
    transform: UserTransform | None = None  # the user's own pipeline, instead of resize

    @classmethod
    def for_model(cls, loaded: LoadedModel, alpha_background: str = "black") -> Preprocess:
        return cls(loaded.size, loaded.mode, loaded.mean, loaded.std, loaded.resize, alpha_background,
                   loaded.resize_size, loaded.interpolation, loaded.transform)

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
            if self.transform is not None:
                try:
                    return self._user_transform(arr)
                except Exception as err:  # the user's pipeline failed on this image: a per-image failure
                    raise ImageDecodeError(f"preprocess.transform failed: {type(err).__name__}: {err}"
                                           ) from err
            img = torch.from_numpy(arr).permute(2, 0, 1)[None]  # (1, C, h, w)
            return self.resize_tensor(img)[0]

    def _user_transform(self, arr: np.ndarray) -> Tensor:
        """The user's pipeline on the decoded image as a PIL image (8 bits a channel, as PIL opens it)."""
        pixels = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
        pil = Image.fromarray(pixels[..., 0] if self.mode == "L" else pixels, self.mode)
        out = self.transform(pil)
        if tuple(out.shape) != (self.channels, *self.size):
            raise ValueError(f"preprocess.transform made a {tuple(out.shape)} tensor, expected "
                             f"{(self.channels, *self.size)}")
        return out.clamp(0, 1).contiguous()

    def resize_tensor(self, img: Tensor) -> Tensor:
        """(1, C, h, w) in [0, 1] -> (1, C, H, W) as configured (module docstring)."""
        if self.resize == "shorter":
            img = center_crop(_resize(img, self.shorter_side_size(img.shape[-2:]), self.interpolation),
                              self.size)
        else:
            img = _resize(img, self.size, self.interpolation)
        return img.clamp(0, 1).contiguous()

    def shorter_side_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        """(H, W) after ``Resize(resize_size)``, torchvision's ``_compute_resized_output_size``. Without
        a ``resize_size``, the shorter side becomes the crop's (for a square crop, torchvision's
        ``Resize(size) + CenterCrop(size)``); a non-square crop gets the smallest such scale that covers
        it."""
        h, w = int(hw[0]), int(hw[1])
        th, tw = self.size
        if self.resize_size is None and th != tw:
            scale = max(th / h, tw / w)  # cover the crop in both directions
            return max(th, int(h * scale)), max(tw, int(w * scale))
        short_target = self.resize_size if self.resize_size is not None else th
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = short_target, int(short_target * long / short)
        return (new_long, new_short) if w <= h else (new_short, new_long)

    def normaliser(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(1, C, 1, 1) mean and std on ``device``."""
        c = self.channels
        mean = torch.tensor(self.mean * (c if len(self.mean) == 1 else 1), device=device).view(1, c, 1, 1)
        std = torch.tensor(self.std * (c if len(self.std) == 1 else 1), device=device).view(1, c, 1, 1)
        return mean, std


def center_crop(img: Tensor, size: tuple[int, int]) -> Tensor:
    """torchvision's ``CenterCrop(size)`` on (..., H, W): offsets ``int(round((H - h) / 2))``, zero padding
    (left/top ``(h - H) // 2``, right/bottom ``(h - H + 1) // 2``) where the image is smaller."""
    th, tw = size
    h, w = img.shape[-2:]
    if th > h or tw > w:
        pad = ((tw - w) // 2 if tw > w else 0, (tw - w + 1) // 2 if tw > w else 0,
               (th - h) // 2 if th > h else 0, (th - h + 1) // 2 if th > h else 0)
        img = F.pad(img, pad, value=0.0)
        h, w = img.shape[-2:]
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return img[..., top : top + th, left : left + tw]


def _resize(img: Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    # antialias so large photos shrink smoothly (like PIL and torchvision), also for upscaling small inputs
    return F.interpolate(img, size=tuple(size), mode=interpolation, align_corners=False, antialias=True)
