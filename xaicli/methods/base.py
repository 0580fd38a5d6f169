"""The method contract shared by every attribution method.

Shapes used throughout (``B`` images, ``K`` targets per image, ``C`` channels, ``H x W`` model input)::

    x        (B, C, H, W)  preprocessed input on the model's device
    targets  (B, K)        class indices (long); or a :class:`TopK` / :class:`WithClasses` request
                           resolved from the logits
    maps     (B, K, H, W)  float32, one map per image x target, at model-input size

Methods never move data off the device and never convert to NumPy: rendering does that once.

What a method *is* (its capabilities) is declared as class attributes, so that every list elsewhere -
the config checks, SmoothGrad's possible bases, the ``torch.compile`` block-list, the benchmark rows,
the test parameters - is derived from the registry instead of being written by hand. How one call is
*run* (how many model inputs per forward pass, the valid input range, whether functional ReLUs may be
patched) is not a method option but an argument of :meth:`Method.explain`, owned by whoever calls it.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from xaicli.errors import ConfigError, format_choices, not_allowed

InputRange = tuple[Tensor, Tensor]
"""Per-channel (C,) values of raw pixel 0 and raw pixel 1 after the model's normalisation."""

MAP_DEFINITION_VERSION = 1
"""The version of how xaicli computes maps from a model, its inputs and a method's options. Part of every
fingerprint (:mod:`xaicli.outputs.fingerprint`): bump it in a release that changes what an existing method
returns for the same options (a formula, a default post-processing step), so that a resume never mixes
maps of the old and the new definition in one OUTDIR."""


def input_range_of(mean: Sequence[float], std: Sequence[float], channels: int | None = None) -> InputRange:
    """The :data:`InputRange` of the normalisation ``(x - mean) / std``: ``((0 - mean) / std,
    (1 - mean) / std)`` per channel (a single mean/std is repeated to ``channels``)."""
    c = channels or max(len(mean), len(std))
    m = torch.tensor(list(mean) * (c if len(mean) == 1 else 1), dtype=torch.float32)
    s = torch.tensor(list(std) * (c if len(std) == 1 else 1), dtype=torch.float32)
    return (0 - m) / s, (1 - m) / s


@dataclass(frozen=True)
class TopK:
    """Explain the ``k`` highest-scoring classes of each image (rank 1 = predicted class)."""

    k: int


@dataclass(frozen=True)
class WithClasses:
    """``first`` (a top-k request, fixed classes, or nothing) followed by per-image classes ``extra``
    (B, J) - e.g. each image's labelled class - so that every target of an image is explained in the
    same forward and backward pass. An entry of ``extra`` below 0 means "no class known": the predicted
    (top-1) class stands in, so the batch keeps its shape; the caller discards that map."""

    first: TopK | Tensor | None
    extra: Tensor


TargetSpec = Tensor | TopK | WithClasses


def resolve_targets(logits: Tensor, spec: TargetSpec) -> Tensor:
    """Turn a target spec into a (B, K) long tensor using the logits of the clean forward pass.

    A tensor spec is (B,) for one target per image, (B, K), or (1, K) for the same K targets for all.
    """
    if isinstance(spec, WithClasses):
        b = logits.shape[0]
        head = (logits.new_empty((b, 0), dtype=torch.long) if spec.first is None
                else resolve_targets(logits, spec.first))
        extra = spec.extra.to(device=logits.device, dtype=torch.long).reshape(b, -1)  # (B, J)
        stand_in = logits.detach().argmax(dim=1, keepdim=True).expand_as(extra)
        return torch.cat([head, torch.where(extra < 0, stand_in, extra)], dim=1)
    if isinstance(spec, TopK):
        k = min(spec.k, logits.shape[1])
        return logits.detach().topk(k, dim=1).indices
    spec = spec.to(device=logits.device, dtype=torch.long)
    if spec.dim() == 1:  # one target per image
        spec = spec[:, None]
    if spec.shape[0] == 1 and logits.shape[0] != 1:  # the same targets for every image
        spec = spec.expand(logits.shape[0], -1)
    return spec


@dataclass(frozen=True)
class Option:
    """One method option: default, type, help text and (optional) allowed values.

    Options are declared once on the method class; config validation, ``xaicli methods`` and the README
    table are all derived from these declarations.
    """

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    kind: type | None = None  # the value's type when the default is None (None: anything goes)
    affects_map: bool = True  # False for options that only change how a map is computed (chunk sizes)

    def validate(self, key: str, value: Any) -> Any:
        kind = self.kind if self.default is None else type(self.default)
        if kind is None or value is None:
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is bool and not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(key, f"expected {kind.__name__}, got {value!r} ({type(value).__name__})")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(key, not_allowed(value, self.choices))
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(key, f"must be >= {self.minimum}, got {value!r}")
        return value


@dataclass
class Explanation:
    """What one method returns for one batch.

    ``maps`` is keyed by layer name (``None`` for pixel methods that explain the input itself).
    ``logits`` is the clean forward pass when the method ran one (the engine reuses it to pick the
    targets of the next methods and to report scores). ``extras`` holds per-(image, target) diagnostics,
    each (B, K), that go into the manifest (e.g. the integrated-gradients completeness delta).
    """

    maps: dict[str | None, Tensor]
    targets: Tensor
    logits: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


CHUNK_OPTION = Option(None, "model inputs per forward pass inside one image's computation (masked copies, "
                      "path points, noisy copies x images); default: chosen by the engine (cache-sized on "
                      "the CPU) and halved automatically after an out-of-memory error", minimum=1, kind=int,
                      affects_map=False)
"""The one option name of an inner chunk, declared by every method with ``chunked = True``."""

RENAMED_OPTIONS: Mapping[str, str] = {"batch_size": "chunk_size", "internal_batch_size": "chunk_size"}
"""Option names of earlier versions, still read (with a warning) so old configs keep working."""


@dataclass(frozen=True)
class Call:
    """How one :meth:`Method.explain` call runs; set by the caller (the engine), never by a config.

    ``chunk_size``: model inputs per forward pass for methods with an inner chunk (results do not depend
    on it: every chunked method is exact). ``input_range``: see :data:`InputRange`; ``None`` means
    unknown (black is then the all-zero input and ranges are taken from each image). ``functional_relu``:
    the ReLU-rule methods also patch ``torch.relu``/``F.relu`` process-wide for the call (needed for
    models that call them in ``forward``); off unless the caller owns the process, as the CLI does.
    """

    chunk_size: int
    input_range: InputRange | None = None
    functional_relu: bool = False


class Method(ABC):
    """Base of every attribution method. A new method is one file with one subclass and ``@register``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str]
    family: ClassVar[str]  # "cam" or "pixel"
    options: ClassVar[Mapping[str, Option]] = {}

    # capabilities, read through the registry (see the module docstring)
    needs_layer: ClassVar[bool] = False  # explains a hooked layer (``layers`` required)
    uses_gradients: ClassVar[bool] = True  # needs autograd through the model
    signed: ClassVar[bool] = False  # some option makes its maps signed ([-1, 1]); see :meth:`is_signed`
    can_wrap: ClassVar[bool] = False  # returns raw input attributions another method can wrap (SmoothGrad)
    chunked: ClassVar[bool] = False  # runs many model inputs per image, ``chunk_size`` at a time
    relu_rules: ClassVar[bool] = False  # swaps ReLU backward rules while it runs (no torch.compile then)
    nonnegative_activations: ClassVar[bool] = False  # assumes the hooked layer's activations are >= 0
    # (post-ReLU); the engine warns at planning time when a layer's probe activations are mostly negative
    default_chunk_size: ClassVar[int] = 64  # ``chunk_size`` when neither the caller nor the config sets one

    input_range: InputRange | None = None
    """The input range a call uses when it passes none: set from the model's preprocessing by
    :func:`~xaicli.methods.create_method` (``input_range=`` or a ``LoadedModel``)."""

    def __init__(self, model: nn.Module, layers: Sequence[str] = (), **options: Any):
        self.model = model
        self.layers = list(layers)
        self.opts = self.resolve_options(options)

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any], key: str = "options") -> dict[str, Any]:
        """Validate ``given`` against the declared options and fill in defaults."""
        given = cls._renamed(given, key)
        unknown = [k for k in given if k not in cls.options]
        if unknown:
            choices = list(cls.options) or ["(this method has no options)"]
            raise ConfigError(f"{key}.{unknown[0]}", f"unknown option for {cls.name}; "
                              + format_choices(unknown[0], choices))
        return {
            name: (opt.validate(f"{key}.{name}", given[name]) if name in given else opt.default)
            for name, opt in cls.options.items()
        }

    @classmethod
    def _renamed(cls, given: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        """Read the old names of renamed options (see :data:`RENAMED_OPTIONS`), with a warning."""
        old = [k for k in given if k in RENAMED_OPTIONS and k not in cls.options and RENAMED_OPTIONS[k]
               in cls.options]
        if not old:
            return given
        out = dict(given)
        for k in old:
            new = RENAMED_OPTIONS[k]
            if new in given:
                raise ConfigError(f"{key}.{k}", f"{k!r} is the old name of {new!r}; give only {new!r}")
            warnings.warn(f"{key}.{k}: option renamed to {new!r} (the old name still works)", FutureWarning,
                          stacklevel=4)
            out[new] = out.pop(k)
        return out

    def map_options(self) -> dict[str, Any]:
        """The resolved options that decide what the maps are (all but the ones that only change how they
        are computed, e.g. ``chunk_size``): what a fingerprint records for this method."""
        return {name: value for name, value in self.opts.items() if self.options[name].affects_map}

    def is_signed(self) -> bool:
        """True when this instance's maps lie in [-1, 1] (signed attributions) rather than [0, 1];
        overlays then use a diverging colormap."""
        return False

    def layers_read(self) -> list[str]:
        """Names of the modules whose outputs or parameters this instance reads while it runs (its hooked
        layers by default). The engine leaves them as they are: no batch-norm folding, no compilation."""
        return list(self.layers) if self.needs_layer else []

    def swaps_relu_rules(self) -> bool:
        """Whether this instance swaps ReLU backward rules while it runs (a wrapper asks its base)."""
        return self.relu_rules

    def make_call(self, chunk_size: int | None = None, input_range: InputRange | None = None,
                  functional_relu: bool = False) -> Call:
        """The :class:`Call` of one explain call. An explicit ``chunk_size`` wins over the ``chunk_size``
        option, which wins over :attr:`default_chunk_size`."""
        size = chunk_size or self.opts.get("chunk_size") or self.default_chunk_size
        rng = input_range if input_range is not None else self.input_range
        return Call(chunk_size=int(size), input_range=rng, functional_relu=functional_relu)

    def explain(self, x: Tensor, targets: TargetSpec | None = None, *, chunk_size: int | None = None,
                input_range: InputRange | None = None, functional_relu: bool = False) -> Explanation:
        """Attribution maps for every image of ``x`` and every requested target (default: top-1).

        ``chunk_size`` (methods with ``chunked``), ``input_range`` (default: :attr:`input_range`) and
        ``functional_relu``: see :class:`Call` and :meth:`make_call`.
        """
        call = self.make_call(chunk_size, input_range, functional_relu)
        return self.compute(x, TopK(1) if targets is None else targets, call)

    @abstractmethod
    def compute(self, x: Tensor, targets: TargetSpec, call: Call) -> Explanation:
        """The method itself: :meth:`explain` with the call settings resolved."""
