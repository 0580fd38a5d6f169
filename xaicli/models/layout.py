"""Where the spatial grid is in a layer's output: NCHW feature maps, channels-last maps, token sequences.

CAM methods combine ``(B, C, h, w)`` maps, but vision transformers and modern CNNs hand out other
layouts at the layers worth explaining:

* ``nchw`` ``(B, C, h, w)``: convolutional feature maps (ResNet, VGG, the output of a Swin after its
  final ``Permute``);
* ``nhwc`` ``(B, h, w, C)``: channels-last maps (torchvision and timm Swin stages, ConvNeXt block
  internals after their ``Permute`` + ``LayerNorm``);
* ``tokens`` ``(B, T, D)``: a token sequence, ``T = p + h*w``, with ``p`` leading non-spatial tokens
  (class, distillation and register tokens) followed by the patches in row-major order (ViT, DeiT, BEiT,
  EVA and Hugging Face ViTs).

:func:`infer_layout` decides from the output shape and the input size, helped by what the model says
about itself (:func:`prefix_tokens`: timm's ``num_prefix_tokens``, else its class/distillation/register
token parameters) and by the module (a ``LayerNorm`` over the last dimension of a 4-D output is
channels-last). A 4-D output is NCHW unless only the channels-last reading fits the input's aspect ratio
or such a norm says so; a 3-D output is a token sequence when ``T - p`` factors into a grid with the
input's aspect ratio. A method option overrides the inference (:data:`LAYOUT_CHOICES`, with ``grid``).

:meth:`Layout.to_nchw` is a view/permutation: applied to a hooked activation or to its gradient it gives
the same ``(B, D, h, w)`` map either way (the gradient of a reshape is the reshaped gradient), so the CAM
methods reshape after the capture and autograd never sees the layout step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from xaicli.errors import ModelError

Kind = Literal["nchw", "nhwc", "tokens"]

LAYOUT_CHOICES: tuple[str, ...] = ("auto", "nchw", "nhwc", "tokens", "tokens_cls")
"""Values of the CAM option ``layer_layout``: ``auto`` infers; ``tokens`` reads the output as a token
sequence, its class/register tokens inferred as for ``auto`` (or ``T - h*w`` of them with ``grid``);
``tokens_cls`` has exactly one class token in front."""

PREFIX_TOKEN_PARAMETERS: tuple[str, ...] = (
    "cls_token", "class_token", "dist_token", "distillation_token", "reg_token", "register_tokens",
)
"""Parameter names of the tokens a ViT puts in front of its patches (timm, torchvision, Hugging Face)."""

MAX_PREFIX = 16  # inferring the prefix: at most this many class/register tokens are tried


@dataclass(frozen=True)
class Layout:
    """How to read one layer output as a ``(B, C, h, w)`` map."""

    kind: Kind
    grid: tuple[int, int]  # (h, w): the spatial size
    prefix: int = 0  # tokens only: leading non-spatial tokens, dropped

    def to_nchw(self, t: Tensor) -> Tensor:
        """The layer output (or its gradient) as ``(B, C, h, w)``; class/register tokens dropped.

        Always a view of ``t`` (a permutation, a slice and a split of one dimension; never a copy), so
        writing into the result writes into ``t`` (Ablation-CAM zeroes channels of a layer output this
        way)."""
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)  # (B, h, w, C) -> (B, C, h, w)
        h, w = self.grid
        patches = t[:, self.prefix :, :]  # (B, h*w, D)
        return patches.reshape(t.shape[0], h, w, t.shape[-1]).permute(0, 3, 1, 2)  # (B, D, h, w)

    def nchw_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """(C, h, w) of the map for a per-image output shape."""
        channels = shape[0] if self.kind == "nchw" else shape[-1]
        return (int(channels), *self.grid)

    def describe(self) -> str:
        """Short text for ``xaicli layers``: ``NCHW``, ``NHWC``, ``tokens 1+14x14``."""
        if self.kind == "tokens":
            h, w = self.grid
            return f"tokens {self.prefix}+{h}x{w}" if self.prefix else f"tokens {h}x{w}"
        return self.kind.upper()

    def to_dict(self) -> dict:
        return {"kind": self.kind, "grid": list(self.grid), "prefix": self.prefix}


def fits_input(grid: tuple[int, int], input_size: tuple[int, int]) -> bool:
    """Whether an ``h x w`` grid is the input downscaled by one common stride ``s`` (up to the +-1 of
    padding and rounding): some ``s`` with ``|h - H/s| < 1`` and ``|w - W/s| < 1``."""
    (h, w), (big_h, big_w) = grid, input_size
    if h < 1 or w < 1 or h > big_h or w > big_w:
        return False
    lo = max(big_h / (h + 1), big_w / (w + 1))
    hi = min(big_h / (h - 1) if h > 1 else math.inf, big_w / (w - 1) if w > 1 else math.inf)
    return lo < hi


def token_grid(n: int, input_size: tuple[int, int]) -> tuple[int, int] | None:
    """The ``h x w = n`` factorisation that fits the input (closest aspect ratio first), if any."""
    big_h, big_w = input_size
    found = [(h, n // h) for h in range(1, n + 1) if n % h == 0 and fits_input((h, n // h), input_size)]
    return min(found, key=lambda g: abs(math.log((g[0] / g[1]) / (big_h / big_w))), default=None)


def prefix_tokens(model: nn.Module) -> int | None:
    """Class/distillation/register tokens the model puts in front of its patches, if it says so:
    timm's ``num_prefix_tokens``, else the token parameters it holds (:data:`PREFIX_TOKEN_PARAMETERS`,
    each ``(1, n, D)``). None when it has neither (the count is then inferred from the shapes)."""
    declared = getattr(model, "num_prefix_tokens", None)
    if isinstance(declared, int) and not isinstance(declared, bool):
        return declared
    found = 0
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] in PREFIX_TOKEN_PARAMETERS and p.dim() == 3:
            found += p.shape[1]
    return found or None


def is_channels_last_norm(module: nn.Module | None, shape: Sequence[int],
                          type_name: str | None = None) -> bool:
    """A ``LayerNorm`` over the last dimension of a per-image 3-D output (``(h, w, C)``): channels-last.

    ``LayerNorm2d`` (ConvNeXt, which normalises channels of an NCHW map) is a subclass with its own name
    and does not count. ``type_name`` stands in for modules that lost their class (``torch.export``)."""
    if len(shape) != 3:
        return False
    if type(module) is nn.LayerNorm:
        return tuple(module.normalized_shape) == (shape[-1],)
    return type_name == "LayerNorm"


def infer_layout(shape: Sequence[int], input_size: tuple[int, int], *, prefix: int | None = None,
                 channels_last: bool = False) -> Layout | None:
    """The layout of a per-image output ``shape`` (module docstring), or None when it is not spatial.

    ``prefix``: the model's class/register token count (:func:`prefix_tokens`), used when it leaves a
    grid; ``channels_last``: the module is a channels-last norm (:func:`is_channels_last_norm`).
    """
    if len(shape) == 3:
        a, b, c = (int(s) for s in shape)
        nhwc_fits = fits_input((a, b), input_size)
        if nhwc_fits and (channels_last or not fits_input((b, c), input_size)):
            return Layout("nhwc", (a, b))
        return Layout("nchw", (b, c))
    if len(shape) == 2:
        t = int(shape[0])
        hinted = [prefix] if prefix is not None and prefix < t else []
        tries = hinted + list(range(min(MAX_PREFIX, t - 1) + 1))
        for p in dict.fromkeys(tries):
            grid = token_grid(t - p, input_size)
            if grid is not None and grid[0] * grid[1] > 1:
                return Layout("tokens", grid, p)
    return None


def resolve_layout(shape: Sequence[int], input_size: tuple[int, int], choice: str = "auto",
                   grid: Sequence[int] | None = None, *, prefix: int | None = None,
                   channels_last: bool = False, layer: str = "layer") -> Layout:
    """The layout to use for a layer whose per-image output is ``shape``: inferred for ``auto``, else as
    ``choice`` and ``grid`` (the CAM options ``layer_layout`` and ``grid``) say. Raises
    :class:`~xaicli.errors.ModelError` naming the layer when the output cannot be read that way."""
    shape = tuple(int(s) for s in shape)
    if grid is not None and (len(grid) != 2 or not all(type(g) is int and g >= 1 for g in grid)):
        raise ModelError(f"grid must be [h, w] with positive integer sizes, got {list(grid)}")
    given = tuple(int(g) for g in grid) if grid is not None else None
    if choice == "auto" and given is None:
        found = infer_layout(shape, input_size, prefix=prefix, channels_last=channels_last)
        if found is None:
            raise ModelError(f"layer {layer!r} outputs shape {shape} per image, which is not a feature "
                             "map ((C, h, w), (h, w, C) or tokens (T, D)) for this input size; pick another "
                             "layer (`xaicli layers`) or set options.layer_layout and options.grid")
        return found
    if choice == "auto":  # a grid without a layout: the layout follows from the dimensions
        choice = "tokens" if len(shape) == 2 else ("nhwc" if shape[:2] == given else "nchw")
    if choice in ("nchw", "nhwc"):
        if len(shape) != 3:
            raise ModelError(f"layer {layer!r} outputs shape {shape} per image; layer_layout {choice} needs "
                             "a 4-D output (B, C, h, w) / (B, h, w, C)")
        found = Layout(choice, shape[1:] if choice == "nchw" else shape[:2])
        if given is not None and found.grid != given:
            raise ModelError(f"layer {layer!r}: grid {list(given)} does not match its {choice} output "
                             f"{shape}")
        return found
    if len(shape) != 2:
        raise ModelError(f"layer {layer!r} outputs shape {shape} per image; layer_layout {choice} needs "
                         "tokens (B, T, D)")
    t = shape[0]
    first = 1 if choice == "tokens_cls" else 0
    if given is None and choice == "tokens":
        found = infer_layout(shape, input_size, prefix=prefix)
        if found is None:
            raise ModelError(f"layer {layer!r}: {t} tokens do not form a patch grid with the input's aspect "
                             "ratio after any class/register tokens; give options.grid: [h, w]")
        return found
    if given is not None:
        p = t - given[0] * given[1]
        if p < first:
            raise ModelError(f"layer {layer!r}: grid {list(given)} needs at least "
                             f"{given[0] * given[1] + first} tokens, the layer has {t}")
        return Layout("tokens", given, p)
    found_grid = token_grid(t - first, input_size)
    if found_grid is None:
        raise ModelError(f"layer {layer!r}: {t - first} patch tokens do not form a grid with the input's "
                         "aspect ratio; give options.grid: [h, w]")
    return Layout("tokens", found_grid, first)
