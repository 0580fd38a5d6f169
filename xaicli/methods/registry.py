"""The one place a method name lives.

Each method module registers its class with :func:`register`; everything else (CLI choices, config
validation, ``xaicli methods``, the README table, the contract tests) reads :func:`available_methods`.
Method modules under ``xaicli.methods.cam`` and ``xaicli.methods.gradient`` are imported on first use,
so adding a method is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from typing import Any

from torch import nn

from xaicli.errors import ConfigError, UnknownNameError
from xaicli.methods.base import InputRange, Method, input_range_of
from xaicli.models.loader import LoadedModel

_REGISTRY: dict[str, type[Method]] = {}
_LOADED = False
_PACKAGES = ("xaicli.methods.cam", "xaicli.methods.gradient")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise RuntimeError(f"method name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    for pkg_name in _PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{info.name}")
    _LOADED = True


def available_methods() -> dict[str, type[Method]]:
    """All registered methods, CAM family first, then by name."""
    _load_all()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].family != "cam", kv[0])))


def methods_where(**capabilities: bool) -> list[str]:
    """Names of the registered methods whose capability attributes have the given values, e.g.
    ``methods_where(can_wrap=True)`` (SmoothGrad's bases) or ``methods_where(needs_layer=True)``."""
    return [name for name, cls in available_methods().items()
            if all(getattr(cls, attr) == value for attr, value in capabilities.items())]


def get_method(name: str, key: str | None = None) -> type[Method]:
    methods = available_methods()
    if name not in methods:
        raise UnknownNameError("method", name, methods, key=key)
    return methods[name]


def create_method(
    name: str, model: nn.Module | LoadedModel, layers: Sequence[str] = (),
    options: dict[str, Any] | None = None, key: str = "methods[0]", *, input_range: InputRange | None = None,
) -> Method:
    """Instantiate a method by name, validating its options (errors cite ``key``).

    ``model``: an ``nn.Module``, or a :class:`~xaicli.models.loader.LoadedModel`, whose preprocessing
    then gives the input range (integrated gradients' black baseline, SmoothGrad's noise scale).
    ``input_range``: that range given explicitly (see :func:`~xaicli.methods.base.input_range_of`).
    """
    cls = get_method(name, key=f"{key}.name")
    if cls.needs_layer and not layers:
        raise ConfigError(f"{key}.layers", f"method {name!r} needs at least one layer; "
                          "run `xaicli layers -c CONFIG` to list them")
    resolved = cls.resolve_options(options or {}, key=f"{key}.options")  # errors cite the config key
    if isinstance(model, LoadedModel):
        if input_range is None:
            input_range = input_range_of(model.mean, model.std, model.input_shape[0])
        model = model.model
    method = cls(model, layers, **resolved)
    method.input_range = input_range
    return method
