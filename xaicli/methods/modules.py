"""Which ``torch.nn`` layer a module is, also for a TorchScript model seen through xaicli's eager proxy.

Methods that act on layers by kind (DeepLift's rules on activations and max pooling, FullGrad's bias
layers) ask :func:`nn_class` rather than ``isinstance``: a TorchScript model loaded by xaicli is a tree
of :class:`~xaicli.models.torchscript.ScriptModuleProxy` objects, each standing for a compiled module
whose ``original_name`` names the ``torch.nn`` class it was made from.
"""

from __future__ import annotations

import torch
from torch import nn


def script_of(module: nn.Module) -> torch.jit.ScriptModule | None:
    """The compiled module behind a TorchScript proxy (None for an eager module)."""
    script = getattr(module, "script_module", None)
    return script if isinstance(script, torch.jit.ScriptModule) else None


def nn_class(module: nn.Module) -> type[nn.Module] | None:
    """``type(module)`` for an eager module; for a proxy, the ``torch.nn`` class its script module was
    compiled from (None when that is not a ``torch.nn`` class, e.g. a user's own block)."""
    script = script_of(module)
    if script is None:
        return type(module)
    cls = getattr(nn, str(getattr(script, "original_name", "")), None)
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


def is_a(module: nn.Module, classes: type | tuple[type, ...]) -> bool:
    """``isinstance(module, classes)``, seeing through TorchScript proxies (:func:`nn_class`)."""
    cls = nn_class(module)
    return cls is not None and issubclass(cls, classes)


def layer_attr(module: nn.Module, name: str, default: object = None) -> object:
    """A layer's attribute (``inplace``, ``return_indices`` ...), from its script module for a proxy;
    ``default`` where it is not kept (a traced module bakes such constants into its graph)."""
    script = script_of(module)
    return getattr(script if script is not None else module, name, default)
