"""The TorchScript graph interpreter: runs a script module's method graph node by node in Python.

Why it exists: a forward hook fires only when a module is *called from Python*. A compiled TorchScript
``forward`` calls its children inside the JIT, where no Python hook can see them. So a non-leaf
:class:`~xaicli.models.torchscript.proxy.ScriptModuleProxy` does not call its script module's ``forward``;
it runs that method's graph here, step by step:

* a call of a child (``prim::CallMethod[name="forward"]``) goes to the child's *proxy*, so forward hooks
  fire there and a hook's replacement output is what the rest of the graph computes with;
* tensor ops (``aten::*``) run through ``torch.ops`` with the overload named in the node's schema, so
  autograd flows through them;
* control flow (``prim::If``, ``prim::Loop``), lists, tuples, dicts, calls of other methods and of
  TorchScript functions (inlined) are interpreted as well. ``torch.jit.script`` of torchvision models
  (``mobilenet_v2`` uses ``prim::If``; ``densenet121`` uses loops, ``prim::RaiseException`` and functions)
  and traced models (straight-line graphs) are handled; outputs match the script module exactly.

What cannot be interpreted (``torch.jit.fork``, ``with`` blocks such as ``torch.no_grad()``, TorchScript
class objects, ...) makes :class:`_Compiler` raise :class:`_Unsupported` while compiling the method, before
anything runs; the proxy module then decides what to do with the module (run it as one compiled call).

Dependencies: the proxy module imports this one, never the reverse. What the interpreter needs of a proxy is
the small :class:`_Owner` protocol, and the proxy class itself (to tell a proxy from another script value at
run time, e.g. in ``prim::GetAttr``) is passed in as an argument: ``_Compiler(owner, proxy_type)``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from xaicli.errors import XaicliError

_ADVICE = "layer methods need a traced model (torch.jit.trace) or an eager nn.Module"


class _Owner(Protocol):
    """What the interpreter uses of a module proxy (implemented by ``proxy.ScriptModuleProxy``)."""

    _xaicli_name: str  # the module's name in the tree, for messages
    _xaicli_script: torch.jit.ScriptModule  # whose compiled methods are interpreted
    _modules: dict  # child proxies by attribute name

    def __call__(self, *args: Any) -> Any: ...  # forward, with its hooks

    def _xaicli_method(self, name: str) -> _Method | None: ...

    def _xaicli_call(self, name: str, args: Sequence[Any]) -> Any: ...

    def _xaicli_attr(self, name: str) -> Any: ...

    def _xaicli_setattr(self, name: str, value: Any) -> None: ...


def _label(name: str) -> str:
    return repr(name) if name else "'' (the top-level module)"


# ------------------------------------------------------------------------------------------ compiled graphs

Runner = Callable[[dict, list], Sequence[Any]]


class _Unsupported(Exception):
    """A graph construct the interpreter cannot run; the owning module then runs as one compiled call."""

    def __init__(self, module: str, kind: str, where: str = "", detail: str = ""):
        super().__init__(kind)
        self.module, self.kind, self.where, self.detail = module, kind, where, detail

    def where_text(self) -> str:
        return f" (at {self.where})" if self.where else ""

    def message(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return (f"TorchScript module {_label(self.module)} uses {self.kind}{self.where_text()}{detail}; "
                f"xaicli cannot run it step by step, so layers inside it cannot be hooked; {_ADVICE}")


@dataclass(eq=False)
class _Step:
    run: Runner
    ins: tuple[int, ...]
    outs: tuple[int, ...]
    where: str  # "aten::conv2d at conv.py:456 in module 'layer1.0.conv1'", for error messages


@dataclass(eq=False)
class _Block:
    ins: tuple[int, ...]
    steps: list[_Step]
    outs: tuple[int, ...]


def _exec(block: _Block, env: dict, args: Sequence[Any]) -> list:
    for key, value in zip(block.ins, args, strict=True):
        env[key] = value
    for step in block.steps:
        try:
            results = step.run(env, [env[i] for i in step.ins])
        except Exception as err:
            _note(err, step)
            raise
        for key, value in zip(step.outs, results, strict=True):
            env[key] = value
    return [env[i] for i in block.outs]


def _note(err: Exception, step: _Step) -> None:
    """Point an error raised while interpreting at the innermost graph node (Python 3.11+ notes)."""
    if isinstance(err, XaicliError) or getattr(err, "_xaicli_noted", False) or not hasattr(err, "add_note"):
        return
    try:
        err._xaicli_noted = True  # type: ignore[attr-defined]
        err.add_note(f"(xaicli TorchScript interpreter: while running {step.where})")
    except (AttributeError, TypeError):  # exception types that refuse attributes
        pass


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def _where(node: Any, prefix: str = "") -> str:
    match = re.search(r'File "([^"]+)", line (\d+)', node.sourceRange() or "")
    return f"{prefix}{os.path.basename(match.group(1))}:{match.group(2)}" if match else ""


@dataclass(eq=False)
class _Method:
    """One compiled method: its graph and the argument names/defaults (without ``self``)."""

    block: _Block
    names: tuple[str, ...]
    defaults: dict[str, Any]

    def __call__(self, owner: _Owner, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        if kwargs or len(args) != len(self.names):
            args = self.bind(args, kwargs)
        out = _exec(self.block, {}, [owner, *args])
        return out[0] if len(out) == 1 else tuple(out)

    def bind(self, args: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        if len(args) > len(self.names):
            raise TypeError(f"forward() takes {len(self.names)} arguments but {len(args)} were given")
        bound = list(args)
        for name in self.names[len(args):]:
            if name in kwargs:
                bound.append(kwargs.pop(name))
            elif name in self.defaults:
                bound.append(self.defaults[name])
            else:
                raise TypeError(f"forward() missing argument {name!r}")
        if kwargs:
            raise TypeError(f"forward() got unexpected keyword arguments {sorted(kwargs)}")
        return bound


def _outputs(result: Any, n: int) -> Sequence[Any]:
    if n == 1:
        return (result,)
    if n == 0:
        return ()
    return tuple(result)


class _Compiler:
    """Turns the graphs of one proxy's methods into :class:`_Block` s; raises :class:`_Unsupported`."""

    def __init__(self, owner: _Owner, proxy_type: type):
        self.owner = owner
        self.proxy_type = proxy_type  # ScriptModuleProxy, passed in: this module does not import it

    def unsupported(self, node: Any, detail: str = "", kind: str | None = None) -> _Unsupported:
        return _Unsupported(self.owner._xaicli_name, kind or node.kind(), _where(node), detail)

    def method(self, name: str) -> _Method:
        script_method = self.owner._xaicli_script._c._get_method(name)
        graph = script_method.graph
        args = list(script_method.schema.arguments)[1:]
        defaults = {a.name: a.default_value for a in args if a.has_default_value()}
        # `self` (graph input 0) is known statically to be the owner: calls of its methods resolve here.
        modules = {next(iter(graph.inputs())).unique(): self.owner}
        block = self.block(graph, modules)
        return _Method(block, tuple(a.name for a in args), defaults)

    def block(self, block: Any, modules: dict[int, _Owner]) -> _Block:
        steps = [self.node(n, modules) for n in block.nodes()]
        return _Block(tuple(v.unique() for v in block.inputs()), steps,
                      tuple(v.unique() for v in block.outputs()))

    def node(self, n: Any, modules: dict[int, _Owner]) -> _Step:
        kind = n.kind()
        ins = tuple(v.unique() for v in n.inputs())
        outs = tuple(v.unique() for v in n.outputs())
        handler = _SPECIAL.get(kind)
        try:
            run = handler(self, n, ins, outs, modules) if handler is not None else self.op(n, len(outs))
        except _Unsupported:
            raise
        except Exception as err:  # anything the graph API refuses: treat the module as opaque
            raise self.unsupported(n, f"{type(err).__name__}: {_first_line(err)}") from err
        return _Step(run, ins, outs, f"{kind}{_where(n, ' at ')} in module {_label(self.owner._xaicli_name)}")

    # -- operators with a schema (aten::*, prim::* with schema, other namespaces)
    def op(self, n: Any, nout: int) -> Runner:
        text = n.schema()
        if text == "(no schema)":
            raise self.unsupported(n)
        schema = torch._C.parse_schema(text)
        python = _python_op(schema.name, schema.overload_name, nout)
        if python is not None:
            return python
        if re.search(r"\.\.\.\)\s*->", text):
            raise self.unsupported(n, "variadic operator")
        generic = any(_is_generic(a.type) for a in schema.arguments) or any(
            _is_generic(r.type) for r in schema.returns)
        if not generic:
            op = _overload(schema.name, schema.overload_name)
            if op is not None:
                npos = sum(1 for a in schema.arguments if not a.kwarg_only)
                kw = tuple(a.name for a in schema.arguments if a.kwarg_only)
                if kw:
                    return lambda _env, a: _outputs(op(*a[:npos], **dict(zip(kw, a[npos:], strict=True))),
                                                    nout)
                return lambda _env, a: _outputs(op(*a), nout)
        # Type-generic JIT operators (t[], Any): run the node alone as a tiny TorchScript function. Mutating a
        # list or dict that way would change a converted copy, so such operators must be in _python_op.
        for a in schema.arguments:
            if a.alias_info is not None and a.alias_info.is_write and not _is_tensorish(a.type):
                raise self.unsupported(n, "mutates a non-tensor argument")
        fn = _node_function(n)
        return lambda _env, a: _outputs(fn(*a), nout)

    def function(self, n: Any) -> _Block:
        """The inlined graph of a ``prim::CallFunction`` node (the called function's body)."""
        graph = torch._C.Graph()
        inputs = list(n.inputs())
        values = {}
        for v in inputs[1:]:
            new = graph.addInput()
            new.setType(v.type())
            values[v.unique()] = new
        const = graph.createClone(inputs[0].node(), lambda v: values[v.unique()])
        graph.insertNode(const)
        values[inputs[0].unique()] = const.output()
        call = graph.createClone(n, lambda v: values[v.unique()])
        graph.insertNode(call)
        for out in call.outputs():
            graph.registerOutput(out)
        torch._C._jit_pass_inline(graph)
        return self.block(graph, {})


def _is_generic(t: Any) -> bool:
    return t.kind() in ("VarType", "AnyType", "AnyListType", "AnyTupleType", "AnyClassType") or any(
        _is_generic(c) for c in t.containedTypes())


def _is_tensorish(t: Any) -> bool:
    kind = t.kind()
    if kind == "TensorType":
        return True
    return kind in ("ListType", "OptionalType") and all(_is_tensorish(c) for c in t.containedTypes())


def _overload(qualified: str, overload: str) -> Any:
    ns, name = qualified.split("::", 1)
    try:
        return getattr(getattr(getattr(torch.ops, ns), name), overload or "default")
    except (AttributeError, RuntimeError):
        return None


def _node_function(n: Any) -> Callable:
    graph = torch._C.Graph()
    values = {}
    for v in n.inputs():
        new = graph.addInput()
        new.setType(v.type())
        values[v.unique()] = new
    clone = graph.createClone(n, lambda v: values[v.unique()])
    graph.insertNode(clone)
    for out in clone.outputs():
        graph.registerOutput(out)
    return torch._C._create_function_from_graph(f"xaicli_{n.kind().replace('::', '_')}", graph)


# -- nodes without a schema, or with semantics that need Python objects


def _constant(c: _Compiler, n: Any, ins: tuple, outs: tuple, modules: dict) -> Runner:
    out = n.output()
    value = None if out.type().kind() == "FunctionType" else out.toIValue()  # functions: see CallFunction
    result = (value,)
    return lambda _env, _a: result


def _get_attr(c: _Compiler, n: Any, ins: tuple, outs: tuple, modules: dict) -> Runner:
    name = n.s("name")
    owner = modules.get(ins[0])
    if owner is not None and name in owner._modules:
        modules[outs[0]] = owner._modules[name]
    proxy_type = c.proxy_type

    def run(_env: dict, a: list) -> tuple:
        obj = a[0]
        return (obj._xaicli_attr(name) if isinstance(obj, proxy_type) else getattr(obj, name),)

    return run


def _set_attr(c: _Compiler, n: Any, ins: tuple, outs: tuple, modules: dict) -> Runner:
    name = n.s("name")
    proxy_type = c.proxy_type

    def run(_env: dict, a: list) -> tuple:
        obj, value = a
        if isinstance(obj, proxy_type):
            obj._xaicli_setattr(name, value)
        else:
            setattr(obj, name, value)
        return ()

    return run


def _call_method(c: _Compiler, n: Any, ins: tuple, outs: tuple, modules: dict) -> Runner:
    name = n.s("name")
    nout = len(outs)
    target = modules.get(ins[0])
    if target is not None and name != "forward":
        target._xaicli_method(name)  # compile now: unsupported code there makes this module opaque
    proxy_type = c.proxy_type

    def run(_env: dict, a: list) -> Sequence[Any]:
        obj = a[0]
        if isinstance(obj, proxy_type):
            result = obj(*a[1:]) if name == "forward" else obj._xaicli_call(name, a[1:])
        else:  # TorchScript class objects and other script values
            result = getattr(obj, name)(*a[1:])
        return _outputs(result, nout)

    return run


def _call_function(c: _Compiler, n: Any, ins: tuple, outs: tuple, modules: dict) -> Runner:
    body = c.function(n)
    return lambda _env, a: _exec(body, {}, a[1:])


def _if(c: _Compiler, n: Any, ins: tuple, outs: tuple, modules: dict) -> Runner:
    then, other = (c.block(b, modules) for b in n.blocks())
    return lambda env, a: _exec(then if a[0] else other, env, ())


def _loop(c: _Compiler, n: Any, ins: tuple, outs: tuple, modules: dict) -> Runner:
    (body,) = (c.block(b, modules) for b in n.blocks())

    def run(env: dict, a: list) -> Sequence[Any]:
        trips, cond, values = a[0], a[1], a[2:]
        i = 0
        while cond and i < trips:
            result = _exec(body, env, [i, *values])
            cond, values = result[0], result[1:]
            i += 1
        return values

    return run


def _simple(fn: Callable[[list], Any]) -> Callable[..., Runner]:
    def handler(c: _Compiler, n: Any, ins: tuple, outs: tuple, modules: dict) -> Runner:
        nout = len(outs)
        return lambda _env, a: _outputs(fn(a), nout)

    return handler


def _tuple(c: _Compiler, n: Any, ins: tuple, outs: tuple, modules: dict) -> Runner:
    if n.output().type().str().startswith("("):
        return lambda _env, a: (tuple(a),)
    # A NamedTuple (e.g. GoogLeNetOutputs): TorchScript itself builds the Python namedtuple.
    fn = _node_function(n)
    return lambda _env, a: (fn(*a),)


def _unpack(a: list) -> tuple:
    return tuple(a[0])


def _raise(a: list) -> None:
    raise torch.jit.Error(str(a[0]))


def _unsupported(c: _Compiler, n: Any, ins: tuple, outs: tuple, modules: dict) -> Runner:
    raise c.unsupported(n)


_SPECIAL: dict[str, Callable[..., Runner]] = {
    "prim::Constant": _constant,
    "prim::GetAttr": _get_attr,
    "prim::SetAttr": _set_attr,
    "prim::CallMethod": _call_method,
    "prim::CallFunction": _call_function,
    "prim::If": _if,
    "prim::Loop": _loop,
    "prim::ListConstruct": _simple(list),
    "prim::TupleConstruct": _tuple,
    "prim::DictConstruct": _simple(lambda a: dict(zip(a[0::2], a[1::2], strict=True))),
    "prim::ListUnpack": _simple(_unpack),
    "prim::TupleUnpack": _simple(_unpack),
    "prim::TupleIndex": _simple(lambda a: a[0][a[1]]),
    "prim::unchecked_cast": _simple(lambda a: a[0]),
    "prim::Uninitialized": _simple(lambda a: None),
    "prim::RaiseException": _simple(_raise),
    "prim::Print": _simple(lambda a: print(*a)),
    # Known not to be interpretable here; listed for a precise message.
    "prim::fork": _unsupported,
    "prim::Enter": _unsupported,
    "prim::Exit": _unsupported,
    "prim::CreateObject": _unsupported,
    "prim::PythonOp": _unsupported,
}


# Generic list/dict/str operators run as Python code: their Python semantics (in-place mutation included) are
# TorchScript's, and torch.ops cannot take Python containers for type-generic (`t[]`) arguments. The first
# element says which overloads qualify: "list" only `.t`, "container" list/str/dict overloads, "any" all but
# `.Tensor`.
_PYTHON_OPS: dict[str, tuple[str, Callable[[list], Any]]] = {
    "aten::__getitem__": ("container", lambda a: a[0][a[1]]),
    "aten::len": ("container", lambda a: len(a[0])),
    "aten::__contains__": ("any", lambda a: a[1] in a[0]),
    "aten::append": ("list", lambda a: (a[0].append(a[1]), a[0])[1]),
    "aten::extend": ("list", lambda a: a[0].extend(a[1])),
    "aten::insert": ("list", lambda a: a[0].insert(a[1], a[2])),
    "aten::reverse": ("list", lambda a: a[0].reverse()),
    "aten::remove": ("list", lambda a: a[0].remove(a[1])),
    "aten::add": ("list", lambda a: a[0] + a[1]),
    "aten::slice": ("list", lambda a: a[0][a[1]:a[2]:a[3]]),
    "aten::list": ("container", lambda a: list(a[0])),
    "aten::copy": ("container", lambda a: a[0].copy()),
    "aten::pop": ("container", lambda a: a[0].pop(*a[1:])),
    "aten::clear": ("container", lambda a: a[0].clear()),
    "aten::_set_item": ("container", lambda a: _set_item(*a)),
    "aten::keys": ("container", lambda a: list(a[0].keys())),
    "aten::values": ("container", lambda a: list(a[0].values())),
    "aten::items": ("container", lambda a: list(a[0].items())),
    "aten::get": ("container", lambda a: a[0].get(*a[1:])),
    "aten::setdefault": ("container", lambda a: a[0].setdefault(a[1], a[2])),
    "aten::update": ("container", lambda a: a[0].update(a[1])),
    "aten::format": ("any", lambda a: a[0].format(*a[1:])),
    "aten::__is__": ("any", lambda a: a[0] is a[1]),
    "aten::__isnot__": ("any", lambda a: a[0] is not a[1]),
    "aten::__not__": ("any", lambda a: not a[0]),
    "aten::warn": ("any", lambda a: warnings.warn(str(a[0]), stacklevel=2)),
}


def _python_op(qualified: str, overload: str, nout: int) -> Runner | None:
    entry = _PYTHON_OPS.get(qualified)
    if entry is None:
        return None
    which, fn = entry
    if which == "list":
        ok = overload == "t"
    elif which == "container":
        ok = overload in ("t", "str", "any") or overload.startswith("Dict") or overload.endswith("_list")
    else:
        ok = overload != "Tensor"
    return (lambda _env, a: _outputs(fn(a), nout)) if ok else None


def _set_item(container: Any, key: Any, value: Any) -> Any:
    container[key] = value
    return container
