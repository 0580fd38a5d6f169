"""The user's own preprocessing: ``preprocess.transform: "module:name"`` (or ``"file.py:name"``).

``name`` is a transform (a callable from a PIL image to a tensor: a torchvision ``Compose``, a ``v2``
pipeline, a function), or a function with no arguments that returns one. xaicli keeps the image the
model saw for the overlays, so the pipeline is split once, here:

* a ``Compose`` whose last step is ``Normalize``: everything before it makes the display image (a
  ``(C, H, W)`` float tensor in [0, 1]), the ``Normalize`` supplies mean and std (unless the config gives
  them);
* anything else is the display step as a whole, and the config's (or the model's) mean and std
  normalise its output.

The output size must not depend on the input image (end with ``CenterCrop`` or a two-sided ``Resize``):
it is found by running the transform on two probe images of different shapes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from xaicli.errors import ConfigError, ModelError

KEY = "preprocess.transform"


@dataclass(frozen=True)
class UserTransform:
    """The user's pipeline split into the display step and its normalisation (module docstring)."""

    display: Callable[[Image.Image], Any]
    mean: tuple[float, ...] | None  # from a trailing Normalize
    std: tuple[float, ...] | None
    size: tuple[int, int]  # (H, W) of its output
    spec: str

    def __call__(self, image: Image.Image) -> Tensor:
        """PIL image -> (C, H, W) float32 in [0, 1] (uint8 tensors are scaled by 1/255)."""
        return to_float_tensor(self.display(image), self.spec)


def to_float_tensor(out: Any, spec: str) -> Tensor:
    if isinstance(out, Image.Image):
        out = torch.from_numpy(np.asarray(out, dtype=np.float32) / 255.0)
        out = out[None] if out.dim() == 2 else out.permute(2, 0, 1)
    if not isinstance(out, Tensor) or out.dim() != 3:
        raise ModelError(f"transform {spec} returned {getattr(out, 'shape', type(out).__name__)}; expected a "
                         "(C, H, W) tensor (end the pipeline with ToTensor / ToImage + ToDtype)")
    if out.dtype == torch.uint8:
        return out.float().div_(255.0)
    return out.float()


def _split_normalize(transform: Any) -> tuple[Callable, tuple[float, ...] | None, tuple[float, ...] | None]:
    steps = getattr(transform, "transforms", None)
    if isinstance(steps, list | tuple) and steps and type(steps[-1]).__name__ == "Normalize":
        last = steps[-1]
        rest = list(steps[:-1])

        def display(image: Image.Image) -> Any:
            for step in rest:
                image = step(image)
            return image

        return display, tuple(float(v) for v in last.mean), tuple(float(v) for v in last.std)
    return transform, None, None


def _resolve(obj: Any, spec: str) -> Any:
    """A transform as given, or the one a no-argument function returns."""
    if inspect.isfunction(obj):
        params = [p for p in inspect.signature(obj).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not params:
            try:
                obj = obj()
            except Exception as err:  # the user's factory failed: say so, without a traceback
                raise ModelError(f"transform factory {spec} raised {type(err).__name__}: {err}") from err
    if not callable(obj):
        raise ConfigError(KEY, f"{spec} is {type(obj).__name__}, not a transform (a callable on PIL images)")
    return obj


def load_transform(obj: Any, spec: str, mode: str) -> UserTransform:
    """Wrap the imported object ``obj`` named by ``spec``; probe its output size with ``mode`` images."""
    display, mean, std = _split_normalize(_resolve(obj, spec))
    sizes = set()
    for w, h in ((320, 256), (241, 389)):  # landscape and portrait, odd sizes
        probe = Image.new(mode, (w, h), 128 if mode == "L" else (128, 128, 128))
        try:
            out = to_float_tensor(display(probe), spec)
        except ModelError:
            raise
        except Exception as err:  # whatever the user's pipeline raises on a plain image
            raise ModelError(f"transform {spec} fails on a {w}x{h} {mode} image: {type(err).__name__}: "
                             f"{err}") from err
        sizes.add(tuple(out.shape[-2:]))
    if len(sizes) != 1:
        raise ConfigError(KEY, f"{spec} makes images of different sizes {sorted(sizes)}; end it with "
                          "CenterCrop(size) or Resize((h, w)) so every image has the model's input size")
    return UserTransform(display, mean, std, sizes.pop(), spec)
