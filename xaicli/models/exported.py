"""``torch.export`` programs (``model.source: export``, a ``.pt2`` file from ``torch.export.save``).

``torch.export.unflatten`` rebuilds the program's module hierarchy: every submodule call becomes an
``InterpreterModule`` under its original name (``layer4``, ``encoder.layers.encoder_layer_11.ln_1``), so
the layer methods hook it as they hook an eager model, and autograd runs through the exported graph.
What unflattening loses is each module's class; it is read back from the graph's ``nn_module_stack``
metadata (:data:`xaicli.models.layers.ORIGINAL_TYPE`), so ``xaicli layers`` shows ``LayerNorm`` rather
than ``InterpreterModule`` and layout inference keeps its channels-last hint.

Attention capture needs real attention modules (an exported ``nn.MultiheadAttention`` is a graph of
aten ops), so the attention methods do not cover exported programs; the CAM and pixel methods do.
Export with a dynamic batch size (``dynamic_shapes={"x": {0: torch.export.Dim("batch")}}``): xaicli runs
batches, and a program traced for one batch size refuses any other (the loader says so).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from xaicli.errors import ModelError
from xaicli.models.layers import ORIGINAL_TYPE


def _read(path: Path) -> torch.export.ExportedProgram:
    try:
        return torch.export.load(str(path))
    except Exception as err:  # zip, pickle, version errors: all mean "not a readable .pt2"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ModelError(f"cannot read {path} with torch.export.load ({type(err).__name__}: {first}); "
                         "model.source export expects a torch.export.save'd .pt2 program") from err


def original_types(program: torch.export.ExportedProgram) -> dict[str, str]:
    """Module name -> original class name, from the nodes' ``nn_module_stack`` metadata."""
    found: dict[str, str] = {}
    for node in program.graph.nodes:
        for entry in (node.meta.get("nn_module_stack") or {}).values():
            fqn, kind = entry[0], entry[1]
            kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
            found.setdefault(re.sub(r"^L\['self'\]\.?", "", fqn), kind.rsplit(".", 1)[-1])
    return found


def load_exported(path: Path) -> tuple[nn.Module, tuple[int, int, int, int] | None]:
    """The program at ``path`` as an unflattened module with its original layer names (and types), and
    the (B, C, H, W) of the example input it was exported with (None if it kept none)."""
    program = _read(path)
    module = torch.export.unflatten(program)
    types = original_types(program)
    for name, sub in module.named_modules():
        if name in types:
            object.__setattr__(sub, ORIGINAL_TYPE, types[name])
    return module, example_input_shape(program)


def example_input_shape(program: torch.export.ExportedProgram) -> tuple[int, int, int, int] | None:
    """(B, C, H, W) of the example input the program was exported with, if it kept one."""
    example = getattr(program, "example_inputs", None)
    if not example:
        return None
    args = example[0] if isinstance(example, tuple) else ()
    first = args[0] if args else None
    if isinstance(first, torch.Tensor) and first.dim() == 4:
        return tuple(int(s) for s in first.shape)
    return None
