"""The one place a metric name lives.

Each metric module registers its class with :func:`register`; everything else (``xaicli evaluate
--metrics``, the config's ``evaluate:`` section, ``sweep --metric``, the README table, the contract tests)
reads :func:`available_metrics`. Modules of this package are imported on first use, so adding a metric
is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from xaicli.errors import UnknownNameError
from xaicli.metrics.base import Metric

_REGISTRY: dict[str, type[Metric]] = {}
_LOADED = False
_FAMILY_ORDER = ("faithfulness", "randomisation", "localisation", "complexity", "robustness")
_NOT_METRICS = {"base", "registry", "api", "similarity"}


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise RuntimeError(f"metric name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    pkg = importlib.import_module("xaicli.metrics")
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name not in _NOT_METRICS:
            importlib.import_module(f"xaicli.metrics.{info.name}")
    _LOADED = True


def available_metrics() -> dict[str, type[Metric]]:
    """All registered metrics, by family (faithfulness, randomisation, localisation, complexity,
    robustness), then in registration order within a family."""
    _load_all()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: _FAMILY_ORDER.index(kv[1].family)))


def metrics_where(**capabilities: Any) -> list[str]:
    """Names of the metrics whose class attributes have the given values, e.g. ``family="faithfulness"``."""
    return [name for name, cls in available_metrics().items()
            if all(getattr(cls, attr) == value for attr, value in capabilities.items())]


def get_metric(name: str, key: str | None = None) -> type[Metric]:
    metrics = available_metrics()
    if name not in metrics:
        raise UnknownNameError("metric", name, metrics, key=key)
    return metrics[name]


def create_metric(name: str, options: Mapping[str, Any] | None = None, key: str = "evaluate") -> Metric:
    """Instantiate a metric by name, validating its options (errors cite ``key``)."""
    cls = get_metric(name, key=f"{key}.metrics")
    return cls(**cls.resolve_options(options, key=f"{key}.options.{name}"))
