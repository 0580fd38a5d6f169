"""The method contract shared by every attribution method.

Shapes used throughout (``B`` images, ``K`` targets per image, ``C`` channels, ``H x W`` model input)::

    x        (B, C, H, W)  preprocessed input on the model's device
    targets  (B, K)        class indices (long); or a :class:`TopK` request resolved from the logits
    maps     (B, K, H, W)  float32, one map per image x target, at model-input size

Methods never move data off the device and never convert to NumPy: rendering does that once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from xaicli.errors import ConfigError, format_choices, not_allowed


@dataclass(frozen=True)
class TopK:
    """Explain the ``k`` highest-scoring classes of each image (rank 1 = predicted class)."""

    k: int


TargetSpec = Tensor | TopK


def resolve_targets(logits: Tensor, spec: TargetSpec) -> Tensor:
    """Turn a target spec into a (B, K) long tensor using the logits of the clean forward pass.

    A tensor spec is (B,) for one target per image, (B, K), or (1, K) for the same K targets for all.
    """
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

    def validate(self, key: str, value: Any) -> Any:
        kind = type(self.default)
        if self.default is None:
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


class Method(ABC):
    """Base of every attribution method. A new method is one file with one subclass and ``@register``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str]
    family: ClassVar[str]  # "cam" or "pixel"
    requires_layer: ClassVar[bool] = False
    options: ClassVar[Mapping[str, Option]] = {}

    def __init__(self, model: nn.Module, layers: Sequence[str] = (), **options: Any):
        self.model = model
        self.layers = list(layers)
        self.opts = self.resolve_options(options)

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any], key: str = "options") -> dict[str, Any]:
        """Validate ``given`` against the declared options and fill in defaults."""
        unknown = [k for k in given if k not in cls.options]
        if unknown:
            choices = list(cls.options) or ["(this method has no options)"]
            raise ConfigError(f"{key}.{unknown[0]}", f"unknown option for {cls.name}; "
                              + format_choices(unknown[0], choices))
        return {
            name: (opt.validate(f"{key}.{name}", given[name]) if name in given else opt.default)
            for name, opt in cls.options.items()
        }

    def signed(self) -> bool:
        """True when maps lie in [-1, 1] (signed attributions) rather than [0, 1]; overlays then use a
        diverging colormap."""
        return False

    @abstractmethod
    def explain(self, x: Tensor, targets: TargetSpec) -> Explanation:
        """Attribution maps for every image of ``x`` and every requested target."""
