"""Shared machinery of the perturbation methods: fill values, the batched runner, post-processing.

Every perturbation method explains a batch the same way (:meth:`PerturbationMethod.compute`):

1. one clean forward pass of the batch fixes the targets (top-k or given classes) and their clean
   scores ``s(x)`` (B, K);
2. the method describes its perturbed inputs as *rows*: the image each row perturbs and a keep mask
   ``m`` in [0, 1] (H, W) per row (1 keeps the pixel, 0 replaces it by the fill ``f``); the input of a
   row is ``x~ = f + m (x - f)`` (``torch.lerp``: exactly ``x`` where ``m = 1``, exactly ``f`` where
   ``m = 0``). :meth:`PerturbationMethod.perturbed_scores` builds and runs them ``chunk_size`` rows at a
   time - every image of the batch, never all rows at once - and reads **every target of a row from the
   same forward pass**, so top-k costs no extra forwards;
3. the method turns the rows' scores into raw maps (B, K, H, W), in score units;
4. post-processing shared with the pixel methods (:mod:`xaicli.methods.postprocess`):
   ``percentile_clip`` (default 100 = off: these maps are smooth or constant per superpixel, without
   the isolated extreme pixels that clipping is for in gradient maps), then ``normalise``: signed maps
   (occlusion, feature ablation, LIME, Kernel SHAP: a perturbation can raise the score) are divided by
   their largest magnitude into [-1, 1] and drawn with a diverging colormap, unsigned ones (RISE) are
   min-max normalised to [0, 1]; as for every method (:func:`~xaicli.methods.postprocess.normalise_map`),
   a constant or nearly constant map (no perturbation changed the score, or all by the same amount)
   becomes all zeros, which the writer flags ``flat``.

``fill`` (what a removed pixel becomes, in the model's normalised input space): ``mean`` (default) is 0,
the dataset mean colour under mean/std normalisation (Captum's default baseline, RISE's ``x * M``);
``black`` is raw 0; ``blur`` the image blurred with a Gaussian of ``blur_sigma`` pixels; a number
``v`` in [0, 1] the raw grey level ``v`` (``lo + v (hi - lo)`` per channel, from the call's
``input_range``; without one, each image's own range). ``score``: ``probability`` (default, the
softmax probability of the target, as MATLAB's occlusionSensitivity/imageLIME and RISE) or ``logit``
(the raw model output, as Captum with ``forward_func=model``).

Determinism: random draws (RISE masks, LIME / Kernel SHAP coalitions) come from a CPU generator seeded
with the ``seed`` option and depend only on the seed, the options and the input size (or number of
superpixels), never on the other images of the batch or on ``chunk_size``. An image's map is therefore
the same in any batch, chunk size, process or ``torchrun`` rank, and on any device (the draws are made
on the CPU and moved), up to the float rounding of forward passes run in differently composed batches
(tests/test_distributed.py: most maps bitwise equal on 1 and 2 ranks, the rest within 1e-4).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from xaicli.errors import ConfigError, not_allowed
from xaicli.methods.base import (
    CHUNK_OPTION,
    Call,
    Explanation,
    InputRange,
    Method,
    Option,
    TargetSpec,
    resolve_targets,
)
from xaicli.methods.hooks import inference_state
from xaicli.methods.input_space import gaussian_blur, input_bounds
from xaicli.methods.postprocess import clip_percentile, normalise_map

FILLS = ("mean", "black", "blur")
SCORES = ("probability", "logit")

KeepMasks = Callable[[int, int], Tensor]
"""``keep(start, stop)`` -> (stop - start, 1, H, W) keep masks of rows ``start..stop-1``."""


@dataclass(frozen=True)
class FillOption(Option):
    """The ``fill`` option: one of :data:`FILLS` or a raw grey level in [0, 1]."""

    def validate(self, key: str, value: Any) -> Any:
        if isinstance(value, str):
            if value not in FILLS:
                raise ConfigError(key, not_allowed(value, (*FILLS, "a number in [0, 1]")))
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(key, f"a fill level is a raw grey value in [0, 1], got {value!r}")
            return float(value)
        raise ConfigError(key, f"expected one of {', '.join(FILLS)} or a number in [0, 1], got {value!r}")


@dataclass(frozen=True)
class PairOption(Option):
    """A size in pixels: ``null`` (the method's default), one int for both sides, or ``[h, w]``."""

    def validate(self, key: str, value: Any) -> Any:
        if value is None:
            return None
        pair = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
        if (not isinstance(pair, list | tuple) or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)):
            raise ConfigError(key, f"expected a positive int or [height, width] in pixels, got {value!r}")
        return [int(pair[0]), int(pair[1])]


PERTURBATION_OPTIONS: dict[str, Option] = {
    "fill": FillOption("mean", "what a removed pixel becomes: mean (0 in normalised space: the dataset "
                       "mean colour), black (raw 0), blur (the blurred image) or a number v (raw grey "
                       "level v in [0, 1])"),
    "blur_sigma": Option(5.0, "Gaussian sigma in pixels for fill: blur", minimum=0.0),
    "score": Option("probability", "what a perturbation changes: probability (softmax of the target) or "
                    "logit (raw output, as Captum with forward_func=model)", choices=SCORES),
    "percentile_clip": Option(100.0, "clip each map at this percentile of |map| before normalising "
                              "(100 = no clipping)", minimum=0.0, maximum=100),
    "normalise": Option(True, "scale each map to [-1, 1] by its largest magnitude ([0, 1] for rise); "
                        "false = raw values in score units"),
    "chunk_size": CHUNK_OPTION,
}


@dataclass
class RawMaps:
    """What a perturbation method computes before post-processing."""

    maps: Tensor  # (B, K, H, W) float32, score units
    extras: dict[str, Tensor] = field(default_factory=dict)  # each (B, K)
    segments: Tensor | None = None  # (B, H, W) int32 superpixel labels


class PerturbationMethod(Method):
    """Base of the perturbation methods: subclasses implement :meth:`attribute` (see the module docstring)."""

    family = "perturbation"
    uses_gradients = False
    chunked = True
    signed = True
    default_chunk_size = 256
    options = PERTURBATION_OPTIONS

    def is_signed(self) -> bool:
        """Signed maps ([-1, 1], diverging colormap) unless the method's attribution has no sign."""
        return self.signed

    @torch.no_grad()
    def compute(self, x: Tensor, targets: TargetSpec, call: Call) -> Explanation:
        with inference_state(self.model):
            x = x.detach()
            logits = self.model(x)  # (B, N)
            tgt = resolve_targets(logits, targets)  # (B, K)
            clean = self.scores(logits, tgt)  # (B, K)
            fill = self.fill_values(x, call.input_range)  # (B, C, H, W)
            raw = self.attribute(x, fill, tgt, clean, call)
        return Explanation(maps={None: self.postprocess(raw.maps)}, targets=tgt, logits=logits,
                           extras=raw.extras, segments=raw.segments)

    @abstractmethod
    def attribute(self, x: Tensor, fill: Tensor, tgt: Tensor, clean: Tensor, call: Call) -> RawMaps:
        """Raw maps of ``x`` (B, C, H, W) for targets ``tgt`` (B, K) with clean scores ``clean`` (B, K)."""

    def scores(self, out: Tensor, tgt: Tensor) -> Tensor:
        """(n, N) model outputs -> (n, K) scores of the targets ``tgt`` (n, K) (see ``score``)."""
        out = out.float()
        if self.opts["score"] == "probability":
            out = out.softmax(dim=1)
        return out.gather(1, tgt)

    def fill_values(self, x: Tensor, input_range: InputRange | None) -> Tensor:
        """What removed pixels become, (B, C, H, W) in the model's input space (see ``fill``)."""
        fill = self.opts["fill"]
        if fill == "mean":
            return torch.zeros_like(x)
        if fill == "blur":
            return gaussian_blur(x, self.opts["blur_sigma"])
        lo, hi = input_bounds(x, input_range)
        level = 0.0 if fill == "black" else float(fill)
        return (lo + level * (hi - lo)).expand_as(x).contiguous()

    def perturbed_scores(self, x: Tensor, fill: Tensor, rows: Tensor, keep: KeepMasks, tgt: Tensor,
                         chunk_size: int) -> Iterator[tuple[int, int, Tensor, Tensor]]:
        """Run every perturbed input, ``chunk_size`` rows per forward pass.

        ``rows`` (R,): the image of each row; ``keep(start, stop)``: their keep masks. Yields
        ``(start, stop, masks (n, 1, H, W), scores (n, K))`` per chunk, in row order.
        """
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        for start in range(0, rows.shape[0], chunk_size):
            stop = min(start + chunk_size, rows.shape[0])
            img = rows[start:stop]  # (n,)
            masks = keep(start, stop).to(x.dtype)  # (n, 1, H, W)
            inputs = torch.lerp(fill[img], x[img], masks)  # (n, C, H, W)
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            yield start, stop, masks, self.scores(self.model(inputs), tgt[img])

    def postprocess(self, maps: Tensor) -> Tensor:
        """(B, K, H, W) raw maps -> clipped and normalised float32 maps (see the module docstring)."""
        maps = clip_percentile(maps.float(), self.opts["percentile_clip"])
        if not self.opts["normalise"]:
            return maps
        return normalise_map(maps, signed=self.is_signed())
