"""The metric contract shared by every evaluation metric.

A metric scores maps that were already computed, on tensors, so that anyone can recompute a value from
a run's outputs (the maps exactly as written to the ``.npy`` files, the images the model saw, the
targets of the manifest). Shapes used throughout (``B`` images, ``K`` targets per image)::

    x        (B, C, H, W)  the model's normalised input, on the model's device
    maps     (B, K, H, W)  float32 maps at model-input size, as written ([0, 1], or [-1, 1] when signed)
    targets  (B, K)        class indices the maps explain
    masks    (B, H, W)     bool, True on the object (localisation metrics only)

A metric returns one value per (image, target) - or per (image, target, stage) for MPRT - plus
metric-specific fields (the deletion curve, the randomised stage's name, ...): :class:`MetricResult`.
Undefined values (an empty mask, an all-zero map) are NaN, never a made-up number.

What a metric *is* is declared as class attributes (``family``, ``needs_masks``, ``reexplains``,
``higher_is_better``), so the CLI, the config checks, ``sweep --metric``, the benchmark and the
contract tests read the registry instead of lists written by hand. Metrics that recompute maps (MPRT,
random logit, max-sensitivity) get a :class:`MapSource`: the method, layer and options that made the
maps, so a recomputed map is made exactly like the written one.

Every model input a metric builds runs ``chunk_size`` rows per forward pass, so the work of all images
and steps goes through the model in large batches, whatever the number of images.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from xaicli.errors import ConfigError, format_choices
from xaicli.methods import InputRange, Option, create_method
from xaicli.methods.gradient.integrated_gradients import CompletenessWarning

Family = Literal["faithfulness", "randomisation", "localisation", "complexity", "robustness"]
DEFAULT_CHUNK = 256


@dataclass(frozen=True)
class MapSource:
    """How the maps under evaluation were made, to recompute them (on another model, input or target).

    ``method``/``layer``/``options``: as in the run's config (resolved options); ``input_range``,
    ``functional_relu`` and ``chunk_size``: the call settings the engine used (see
    :class:`xaicli.methods.base.Call`).
    """

    method: str
    layer: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    input_range: InputRange | None = None
    functional_relu: bool = False
    chunk_size: int | None = None

    def explain(self, model: nn.Module, x: Tensor, targets: Tensor, rows: int | None = None) -> Tensor:
        """(N, C, H, W) inputs and (N, K) targets -> (N, K, H, W) maps of ``model``, ``rows`` images per
        method call (all at once when None). Integrated gradients' completeness warnings are silenced:
        a recomputed map (on a randomised model, a perturbed input) is compared, not judged."""
        method = create_method(self.method, model, [self.layer] if self.layer else [], dict(self.options))
        step = rows or x.shape[0]
        parts = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CompletenessWarning)
            for start in range(0, x.shape[0], step):
                out = method.explain(x[start : start + step], targets[start : start + step],
                                     chunk_size=self.chunk_size, input_range=self.input_range,
                                     functional_relu=self.functional_relu)
                parts.append(out.maps[self.layer].float())
        return torch.cat(parts)


@dataclass
class MetricInput:
    """Everything a metric may need for one batch (see the module docstring for shapes).

    ``ids`` (B,) are stable per-image numbers (the image's position in the run) that seed per-image
    randomness, so a value does not depend on how images were batched. ``probs`` (B, K), when known, is
    the softmax probability of each target on the clean input (saves one forward pass). ``chunk_size``:
    model inputs per forward pass. ``keep_ids``: images whose intermediate maps a metric returns in
    :attr:`MetricResult.kept` (the cascading-randomisation figure).
    """

    model: nn.Module
    x: Tensor
    maps: Tensor
    targets: Tensor
    input_range: InputRange | None = None
    source: MapSource | None = None
    masks: Tensor | None = None
    ids: Tensor | None = None
    probs: Tensor | None = None
    chunk_size: int = DEFAULT_CHUNK
    keep_ids: frozenset[int] = frozenset()  # images whose intermediate maps figures want (MPRT's stages)

    def __post_init__(self) -> None:
        if self.maps.dim() != 4 or self.targets.shape != self.maps.shape[:2]:
            raise ValueError(f"maps must be (B, K, H, W) and targets (B, K); got {tuple(self.maps.shape)} "
                             f"and {tuple(self.targets.shape)}")
        if self.maps.shape[0] != self.x.shape[0] or self.maps.shape[-2:] != self.x.shape[-2:]:
            raise ValueError(f"maps {tuple(self.maps.shape)} do not match inputs {tuple(self.x.shape)}: "
                             "maps are at model-input size, one per image and target")
        if self.ids is None:
            self.ids = torch.arange(self.x.shape[0])
        self.targets = self.targets.to(self.x.device, torch.long)
        self.maps = self.maps.to(self.x.device, torch.float32)

    @property
    def shape(self) -> tuple[int, int]:
        """(B, K)."""
        return int(self.maps.shape[0]), int(self.maps.shape[1])


@dataclass
class MetricResult:
    """Values of one metric for one batch.

    ``values``: (B, K), or (B, K, S) with ``stages`` naming the S stages (MPRT); NaN where undefined.
    ``fields``: metric-specific per-row data with the same leading dimensions (e.g. ``curve`` (B, K, n+1)),
    written into each evaluation row. On the CPU.
    """

    values: Tensor
    fields: dict[str, Tensor] = field(default_factory=dict)
    stages: list[str] | None = None
    kept: dict[int, Tensor] = field(default_factory=dict)  # image id -> intermediate maps, for figures

    def cpu(self) -> MetricResult:
        return MetricResult(self.values.detach().cpu(), {k: v.detach().cpu() for k, v in self.fields.items()},
                            self.stages, {i: v.detach().cpu() for i, v in self.kept.items()})

    @classmethod
    def cat(cls, parts: list[MetricResult]) -> MetricResult:
        """Concatenate along the image dimension (batches of the same metric, in order)."""
        if len(parts) == 1:
            return parts[0]
        return cls(torch.cat([p.values for p in parts]),
                   {k: torch.cat([p.fields[k] for p in parts]) for k in parts[0].fields}, parts[0].stages,
                   {i: v for p in parts for i, v in p.kept.items()})


class Metric(ABC):
    """Base of every metric. A new metric is one file with one subclass and ``@register``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str]
    family: ClassVar[Family]
    options: ClassVar[Mapping[str, Option]] = {}
    higher_is_better: ClassVar[bool] = True  # for people and figures; gates name their direction
    needs_masks: ClassVar[bool] = False  # localisation: needs ``masks`` (``--masks DIR``)
    reexplains: ClassVar[bool] = False  # recomputes maps (needs a :class:`MapSource`)
    staged: ClassVar[bool] = False  # one value per stage (values (B, K, S))

    def __init__(self, **options: Any):
        self.opts = self.resolve_options(options)

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any] | None, key: str = "options") -> dict[str, Any]:
        """Validate ``given`` against the declared options (errors cite ``key``) and fill in defaults."""
        given = dict(given or {})
        unknown = [k for k in given if k not in cls.options]
        if unknown:
            choices = list(cls.options) or ["(this metric has no options)"]
            raise ConfigError(f"{key}.{unknown[0]}", f"unknown option for {cls.name}; "
                              + format_choices(unknown[0], choices))
        return {name: (opt.validate(f"{key}.{name}", given[name]) if name in given else opt.default)
                for name, opt in cls.options.items()}

    def __call__(self, inp: MetricInput) -> MetricResult:
        if self.needs_masks and inp.masks is None:
            raise ValueError(f"{self.name} needs object masks (--masks DIR)")
        if self.reexplains and inp.source is None:
            raise ValueError(f"{self.name} recomputes maps and needs a MapSource (method, layer, options)")
        with torch.no_grad():
            return self.compute(inp).cpu()

    @abstractmethod
    def compute(self, inp: MetricInput) -> MetricResult:
        """The metric itself, on one batch."""


# --- helpers shared by several metrics ---------------------------------------------------------------


def target_probs(model: nn.Module, inputs: Tensor, targets: Tensor, chunk: int) -> Tensor:
    """Softmax probability of ``targets`` (N,) for (N, C, H, W) ``inputs``, ``chunk`` rows per pass."""
    out = []
    for start in range(0, inputs.shape[0], chunk):
        logits = model(inputs[start : start + chunk]).float()
        out.append(logits.softmax(dim=1).gather(1, targets[start : start + chunk, None])[:, 0])
    return torch.cat(out) if out else inputs.new_zeros(0)


def probs_of_rows(model: nn.Module, n_rows: int, make_rows: Callable[[Tensor], Tensor], targets_of: Tensor,
                  chunk: int) -> Tensor:
    """Softmax probability for ``n_rows`` model inputs built on the fly, ``chunk`` at a time.

    ``make_rows(idx)`` returns the (n, C, H, W) inputs of the row indices ``idx`` (n,) on the device;
    ``targets_of`` (n_rows,) is each row's target class. Inputs never exist all at once.
    """
    device = targets_of.device
    out = torch.empty(n_rows, device=device)
    for start in range(0, n_rows, chunk):
        idx = torch.arange(start, min(start + chunk, n_rows), device=device)
        logits = model(make_rows(idx)).float()
        out[idx] = logits.softmax(dim=1).gather(1, targets_of[idx, None])[:, 0]
    return out


_U32 = 0xFFFFFFFF


def _fmix(h: Tensor) -> Tensor:
    """A 32-bit integer finaliser (every product stays below 2^59: no int64 overflow)."""
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & _U32
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & _U32
    return h ^ (h >> 16)


def mix(*values: Tensor | int) -> Tensor:
    """A deterministic integer hash of the (broadcast) arguments, in [0, 2^31). Seeds per image, per
    target, per draw, independent of batching."""
    h = torch.zeros((), dtype=torch.long)
    for v in values:
        v = torch.as_tensor(v, dtype=torch.long) & _U32
        h = _fmix((h * 31 + _fmix(v) + 0x9E3779B9) & _U32)
    return h & 0x7FFFFFFF


def image_generator(seed: int, image_id: int, device: torch.device) -> torch.Generator:
    """A generator seeded from (seed, image id), so an image's random draws do not depend on batching."""
    return torch.Generator(device=device).manual_seed(int(mix(seed, image_id)))


def per_image_uniform(ids: Tensor, seed: int, shape: tuple[int, ...], device: torch.device,
                      low: float = -1.0, high: float = 1.0) -> Tensor:
    """(B, *shape) uniform draws in [low, high), one seeded generator per image id."""
    out = [torch.rand(shape, generator=image_generator(seed, int(i), device), device=device)
           for i in ids.tolist()]
    return low + (high - low) * torch.stack(out)


def per_image_normal(ids: Tensor, seed: int, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """(B, *shape) standard normal draws, one seeded generator per image id."""
    return torch.stack([torch.randn(shape, generator=image_generator(seed, int(i), device), device=device)
                        for i in ids.tolist()])
