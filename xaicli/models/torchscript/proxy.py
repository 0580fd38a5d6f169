"""Presenting a TorchScript module as a tree of hookable eager ``nn.Module`` s.

Layer methods (Grad-CAM and friends) register forward hooks on named submodules. A TorchScript module
(``torch.jit.load`` of a scripted or traced model) refuses new hooks, so :func:`hookable` wraps it in an
eager mirror:

* one :class:`ScriptModuleProxy` (an ordinary ``nn.Module``) per script module, with the same names, so
  ``proxy.named_modules()`` lists exactly what ``script_module.named_modules()`` lists;
* a **leaf** proxy (a script module without children: ``Conv2d``, ``BatchNorm2d``, ``ReLU`` ...) calls the
  compiled ``forward`` of its script module;
* a **non-leaf** proxy runs the TorchScript graph of its ``forward`` node by node in Python
  (:mod:`xaicli.models.torchscript.interpreter`), so calls of its children go through their proxies and
  their hooks;
* parameters and buffers are the script module's own tensor objects, so ``requires_grad_`` on
  ``proxy.parameters()`` acts on the computation; ``train()``/``eval()`` and ``.to()``/``.double()`` are
  passed on to the script module.

What cannot be interpreted (``torch.jit.fork``, ``with`` blocks such as ``torch.no_grad()``, TorchScript
class objects, ...) does not stop the model from working: the module whose code contains it runs as one
compiled call (it can still be hooked itself), and only layers *inside* it refuse hooks, with a
:class:`~xaicli.errors.ModelError` naming the module and the construct. ``hookable(m, strict=True)``
raises that error at conversion time instead.

Dependencies: this module imports the interpreter; the interpreter does not import this module (it gets
:class:`ScriptModuleProxy` as an argument of ``_Compiler``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xaicli.errors import ModelError
from xaicli.models.torchscript.interpreter import _Compiler, _first_line, _label, _Method, _Unsupported

__all__ = ["ScriptModuleProxy", "hookable", "iter_unsupported", "load_torchscript"]


# --------------------------------------------------------------------------------------------------- loading


def load_torchscript(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """``torch.jit.load`` a scripted or traced model; return its hookable eager mirror (:func:`hookable`).

    The module keeps the training/eval mode it was saved in.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"TorchScript file not found: '{p}'")
    try:
        with warnings.catch_warnings():  # torch 2.9+ marks TorchScript deprecated on every load
            warnings.simplefilter("ignore", FutureWarning)
            script = torch.jit.load(str(p), map_location=map_location)
    except Exception as err:  # not a TorchScript archive (e.g. a torch.save pickle), corrupt, newer format
        why = _first_line(err) or type(err).__name__
        raise ModelError(f"cannot load '{p}' as a TorchScript model ({why}); save one with "
                         "torch.jit.save(torch.jit.trace(model, example_input), path)") from err
    return hookable(script)


def hookable(script_module: torch.jit.ScriptModule, *, strict: bool = False) -> nn.Module:
    """An eager ``nn.Module`` tree mirroring ``script_module`` on whose submodules forward hooks work.

    Module names, outputs, parameters (the same tensor objects) and gradients are those of the script
    module. A module whose code uses a construct the interpreter does not support runs as one compiled
    call; hooking a layer inside it raises :class:`ModelError` (with ``strict=True``, conversion does).
    A plain ``nn.Module`` that is not TorchScript is returned unchanged.
    """
    if not isinstance(script_module, torch.jit.ScriptModule):
        if isinstance(script_module, nn.Module):
            return script_module
        raise TypeError(f"expected a torch.jit.ScriptModule, got {type(script_module).__name__}")
    memo: dict[int, ScriptModuleProxy] = {}
    root = _mirror(script_module, "", memo)
    proxies = list(memo.values())
    for proxy in proxies:
        try:
            proxy._xaicli_method("forward")
        except _Unsupported as u:
            proxy.__dict__["_xaicli_opaque"] = u
            if strict and not proxy._xaicli_leaf:  # an opaque leaf costs no hook
                raise ModelError(u.message()) from None
    for proxy in proxies:
        u = proxy._xaicli_opaque
        if u is not None:
            for _, inner in proxy.named_modules(remove_duplicate=False):
                if inner is not proxy and inner._xaicli_sealed is None:
                    inner.__dict__["_xaicli_sealed"] = u
    return root


def _mirror(script: torch.jit.ScriptModule, name: str, memo: dict) -> ScriptModuleProxy:
    if id(script) in memo:  # a module shared under two names: one proxy, like named_modules()
        return memo[id(script)]
    proxy = ScriptModuleProxy(script, name)
    memo[id(script)] = proxy
    for child_name, child in script.named_children():
        proxy.add_module(child_name, _mirror(child, f"{name}.{child_name}" if name else child_name, memo))
    return proxy


# ----------------------------------------------------------------------------------------------------- proxy


class ScriptModuleProxy(nn.Module):
    """Eager stand-in for one TorchScript (sub)module; built by :func:`hookable`."""

    def __init__(self, script: torch.jit.ScriptModule, name: str):
        super().__init__()
        # Stored in __dict__ so that nn.Module does not register the script module as a child.
        self.__dict__.update(
            _xaicli_script=script,
            _xaicli_name=name,
            _xaicli_leaf=len(list(script.children())) == 0,
            _xaicli_methods={},
            _xaicli_opaque=None,  # _Unsupported: forward runs as one compiled call
            _xaicli_sealed=None,  # _Unsupported of an enclosing opaque module: hooks refused
        )
        self.training = bool(getattr(script, "training", False))  # frozen modules have no `training`
        self._xaicli_sync_tensors()

    # -- what the script module is
    @property
    def script_module(self) -> torch.jit.ScriptModule:
        """The wrapped TorchScript module."""
        return self._xaicli_script

    def _get_name(self) -> str:
        return f"TorchScript[{getattr(self._xaicli_script, 'original_name', 'Module')}]"

    def extra_repr(self) -> str:
        if self._xaicli_opaque is not None:
            return f"compiled call: uses {self._xaicli_opaque.kind}"
        return ""

    # -- calling
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        method = None if self._xaicli_opaque is not None else self._xaicli_methods.get("forward")
        if method is None:
            return self._xaicli_compiled("forward")(*args, **kwargs)
        return method(self, args, kwargs)

    def _xaicli_call(self, name: str, args: Sequence[Any]) -> Any:
        method = self._xaicli_methods.get(name)
        if method is None:
            return self._xaicli_compiled(name)(*args)
        return method(self, args, {})

    def _xaicli_compiled(self, name: str) -> Callable:
        """The script module's own compiled method (``TracedModule.forward`` of a submodule refuses calls)."""
        return self._xaicli_script._c._get_method(name)

    def _xaicli_method(self, name: str) -> _Method | None:
        """Compile method ``name`` of the script module for step-by-step interpretation (once)."""
        if not self._xaicli_script._c._has_method(name):
            return None  # e.g. a ModuleList/ModuleDict without forward: calling it fails as in TorchScript
        if name not in self._xaicli_methods:
            self._xaicli_methods[name] = _Compiler(self, ScriptModuleProxy).method(name)
        return self._xaicli_methods[name]

    def _xaicli_attr(self, name: str) -> Any:
        if name in self._modules:
            return self._modules[name]
        if name in self._parameters:
            return self._parameters[name]
        if name in self._buffers:
            return self._buffers[name]
        return getattr(self._xaicli_script, name)

    def _xaicli_setattr(self, name: str, value: Any) -> None:
        setattr(self._xaicli_script, name, value)
        if name in self._parameters or name in self._buffers:
            self._xaicli_sync_tensors()

    # -- state shared with the script module
    def _xaicli_sync_tensors(self) -> None:
        """Expose the script module's own parameters and buffers (the same tensor objects)."""
        script = self._xaicli_script
        self._parameters.clear()
        self._buffers.clear()
        # Set the dicts directly: parameters of a loaded script module are plain tensors, not nn.Parameter.
        for key, value in script._parameters.items():
            if value is not None:
                self._parameters[key] = value
        for key, value in script._buffers.items():
            if value is not None:
                self._buffers[key] = value

    def train(self, mode: bool = True) -> ScriptModuleProxy:
        if self._xaicli_script._c.hasattr("training"):
            self._xaicli_script.training = mode  # this module only; children are reached by super().train
        return super().train(mode)

    def _apply(self, fn: Callable, recurse: bool = True) -> ScriptModuleProxy:
        if recurse:
            for child in self.children():
                child._apply(fn)
        self._xaicli_script._apply(fn, recurse=False)
        self._xaicli_sync_tensors()
        return self

    # -- hooks
    def _xaicli_check_hookable(self) -> None:
        u = self._xaicli_sealed
        if u is not None:
            outer = _label(u.module)
            raise ModelError(
                f"cannot hook layer {self._xaicli_name!r}: it runs inside TorchScript module {outer}, which "
                f"uses {u.kind}{u.where_text()} and therefore runs as one compiled call; hook {outer} itself "
                "or a layer outside it; to hook layers inside it, export a traced model (torch.jit.trace) or "
                "use the eager nn.Module"
            )

    def register_forward_hook(self, hook: Callable, *args: Any, **kwargs: Any):  # type: ignore[override]
        self._xaicli_check_hookable()
        return super().register_forward_hook(hook, *args, **kwargs)

    def register_forward_pre_hook(self, hook: Callable, *args: Any, **kwargs: Any):  # type: ignore[override]
        self._xaicli_check_hookable()
        return super().register_forward_pre_hook(hook, *args, **kwargs)

    def register_full_backward_hook(self, hook: Callable, *args: Any, **kwargs: Any):  # type: ignore[override]
        self._xaicli_check_hookable()
        return super().register_full_backward_hook(hook, *args, **kwargs)

    def register_full_backward_pre_hook(self, hook: Callable, *args: Any, **kwargs: Any):  # type: ignore[override]
        self._xaicli_check_hookable()
        return super().register_full_backward_pre_hook(hook, *args, **kwargs)

    def register_backward_hook(self, hook: Callable):  # type: ignore[override]
        self._xaicli_check_hookable()
        return super().register_backward_hook(hook)


def iter_unsupported(model: nn.Module) -> Iterator[tuple[str, str]]:
    """``(name, message)`` for each module of a :func:`hookable` tree whose inner layers cannot be hooked.

    These modules (never leaves: a leaf has no inner layers) run as one compiled call.
    """
    for name, module in model.named_modules():
        if isinstance(module, ScriptModuleProxy) and module._xaicli_opaque and not module._xaicli_leaf:
            yield name, module._xaicli_opaque.message()
