"""TorchScript models with hookable layers.

Layer methods (Grad-CAM and friends) register forward hooks on named submodules. A TorchScript module
(``torch.jit.load`` of a scripted or traced model) refuses new hooks, so :func:`hookable` wraps it in an
eager mirror whose submodules accept them. The work is split in two modules:

* :mod:`.proxy`: presenting a ScriptModule as a tree of hookable ``nn.Module`` s
  (:class:`ScriptModuleProxy`, :func:`hookable`, :func:`load_torchscript`, :func:`iter_unsupported`);
* :mod:`.interpreter`: running a TorchScript graph node by node in Python, so that a call of a child goes
  through the child's proxy (and its hooks) instead of staying inside the JIT.

``proxy`` imports ``interpreter``, never the reverse: the interpreter receives the proxy class as an
argument. This package re-exports the public names.
"""

from xaicli.models.torchscript.proxy import ScriptModuleProxy, hookable, iter_unsupported, load_torchscript

__all__ = ["ScriptModuleProxy", "hookable", "iter_unsupported", "load_torchscript"]
