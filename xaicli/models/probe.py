"""One hooked forward pass that tells everything start-up needs to know about a model.

Loading a model used to run it up to five times on a dummy input: once for the number of classes, once
per layer check and default-layer choice, once for the gradient check and twice for batch-norm folding.
:func:`probe_model` runs it once, with a hook on every module, and records

* the output: its shape (the number of classes) and whether it depends on the input through autograd
  (gradient methods need that); a Hugging Face classifier's ``ModelOutput`` (an object or dict with
  ``.logits``) gets a forward hook on the model's root that returns just the logits
  (:func:`logits_only`), so everything downstream sees a ``(B, N)`` tensor;
* every named module's output shape per image, the :class:`~xaicli.models.layout.Layout` inferred for it
  (NCHW map, channels-last map, token sequence) and its position in execution order (the layer checks,
  ``xaicli layers`` and the default CAM layer, :mod:`.layers`);
* the (convolution, batch norm) pairs where the batch norm's input *is* the convolution's output and
  both run once (what :mod:`xaicli.engine.fold` may fold), and, when asked, every module's output, which
  the folding check compares against the folded model's.

The input is seeded noise (``torch.randn``, seed 0), so the outputs are not degenerate and two probes of
the same model agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from xaicli.errors import ModelError
from xaicli.models.layout import Layout, infer_layout, is_channels_last_norm, prefix_tokens

ORIGINAL_TYPE = "_xaicli_original_type"
"""Attribute holding a module's original class name where loading replaced the class (``torch.export``
programs become ``InterpreterModule`` s); read by :func:`type_name`."""


def type_name(module: nn.Module) -> str:
    """The module's class name, or its original one (see :data:`ORIGINAL_TYPE`)."""
    return getattr(module, ORIGINAL_TYPE, None) or type(module).__name__


@dataclass
class LayerInfo:
    name: str
    type: str
    shape: tuple[int, ...] | None  # output shape for one input image, None if not called
    order: int  # position in execution order (-1: never called)
    hooked: bool = True  # False: the module refused a hook (its shape and order are unknown)
    layout: Layout | None = None  # how its output reads as a (C, h, w) map; None: not spatial

    @property
    def map_shape(self) -> tuple[int, int, int] | None:
        """(C, h, w) of the map its output gives (after the layout step), None when not spatial."""
        return self.layout.nchw_shape(self.shape) if self.layout and self.shape else None


@dataclass
class ModelProbe:
    """What one forward pass of a model on a probe input showed (see the module docstring)."""

    input_shape: tuple[int, int, int]  # (C, H, W)
    num_outputs: int  # classes
    output_requires_grad: bool
    layers: list[LayerInfo]  # every named module (the root excluded), in definition order
    bn_pairs: list[tuple[str, str]]  # (conv, batch norm) pairs that may be folded
    example: Tensor  # the probe input, (1, C, H, W), on the device it ran on
    outputs: dict[str, Tensor] = field(default_factory=dict)  # module name ("" = the model) -> its output
    grad_error: str | None = None  # why the model could not run with an input that requires gradients

    def layer(self, name: str) -> LayerInfo | None:
        return next((i for i in self.layers if i.name == name), None)

    def take_outputs(self) -> dict[str, Tensor]:
        """The recorded module outputs, handed over once (they are as large as one image's activations)."""
        outputs, self.outputs = self.outputs, {}
        return outputs


def probe_example(input_shape: tuple[int, int, int], device: torch.device | str = "cpu", batch: int = 1
                  ) -> Tensor:
    """The probe input: (batch, C, H, W) standard normal noise, seed 0."""
    x = torch.randn((batch, *input_shape), generator=torch.Generator().manual_seed(0))
    return x.to(device)


def probe_model(model: nn.Module, input_shape: tuple[int, int, int], keep_outputs: bool = False,
                batch: int = 1) -> ModelProbe:
    """Run ``model`` once on :func:`probe_example` (on the model's device) with a hook on every module.

    The input requires gradients; if the forward pass fails only because of that (e.g. an in-place
    operation on its input), it is run again without, and ``grad_error`` says why. ``batch``: images in
    the probe input (an exported program is probed with a batch size it was not traced with, which proves
    its batch dimension is dynamic). A model returning a ``ModelOutput`` with ``.logits`` gets the
    :func:`logits_only` hook (once). Raises :class:`~xaicli.errors.ModelError` when the model fails on
    the input, exits, or does not return (batch, classes) scores.
    """
    first = next(iter(model.parameters()), None)
    example = probe_example(input_shape, first.device if first is not None else "cpu", batch)
    recorder = _Recorder(model, keep_outputs)
    grad_error = None
    try:
        recorder.attach()
        try:
            out = _forward(model, example.clone().requires_grad_(True), input_shape, grad=True)
        except ModelError as err:
            recorder.reset()
            out = _forward(model, example, input_shape, grad=False)  # raises if it fails here too
            grad_error = str(err)
    finally:
        recorder.detach()
    if not isinstance(out, Tensor) and has_logits(out):
        model.register_forward_hook(logits_only)
        out = logits_only(model, (), out)
    if not isinstance(out, Tensor) or out.dim() != 2:
        raise ModelError("the model must return class scores of shape (batch, classes) (or an object with "
                         f".logits); got {getattr(out, 'shape', type(out).__name__)}")
    return ModelProbe(input_shape, int(out.shape[1]), bool(out.requires_grad) and grad_error is None,
                      recorder.layers(input_shape), recorder.pairs(), example, recorder.outputs, grad_error)


def logits_only(_module: nn.Module, _inputs: tuple, output: Any) -> Any:
    """Forward hook for Hugging Face classifiers: their ``ModelOutput`` -> its ``logits`` tensor."""
    return output["logits"] if isinstance(output, dict) and "logits" in output else output.logits


def has_logits(out: Any) -> bool:
    if isinstance(out, dict):
        return isinstance(out.get("logits"), torch.Tensor)
    return isinstance(getattr(out, "logits", None), torch.Tensor)


def module_outputs(model: nn.Module, x: Tensor) -> tuple[dict[str, Tensor], list[tuple[str, str]]]:
    """Every module's output (its last call; "" = the model's) on ``x`` without gradients, and the
    (conv, batch norm) pairs seen, as :func:`probe_model` records them (the batch-norm folding check)."""
    recorder = _Recorder(model, keep_outputs=True)
    try:
        recorder.attach()
        with torch.no_grad():
            model(x)
    finally:
        recorder.detach()
    return recorder.outputs, recorder.pairs()


def _forward(model: nn.Module, x: Tensor, input_shape: tuple[int, int, int], grad: bool) -> object:
    c, h, w = input_shape
    batch = x.shape[0]
    try:
        with torch.set_grad_enabled(grad):
            return model(x)
    except SystemExit as err:
        raise ModelError(f"the model called exit({err.code!r}) in its forward pass") from err
    except Exception as err:  # any model error here means "this input shape does not fit the model"
        hint = ("; an exported program needs a dynamic batch size: torch.export.export(model, (x,), "
                "dynamic_shapes={'x': {0: torch.export.Dim('batch')}})" if batch > 1 else "")
        shape = f"{batch}x" if batch > 1 else ""
        raise ModelError(f"the model fails on a {shape}{c}x{h}x{w} input ({type(err).__name__}: {err}); "
                         f"check preprocess.size and preprocess.mode{hint}") from err


class _Recorder:
    """The hooks of one probe and what they saw."""

    def __init__(self, model: nn.Module, keep_outputs: bool):
        self.model = model
        self.keep_outputs = keep_outputs
        self.modules = list(model.named_modules())
        self.handles: list = []
        self.refused: set[str] = set()
        self.reset()

    def reset(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.order: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.outputs: dict[str, Tensor] = {}
        self.conv_of: dict[int, str] = {}  # id(conv output) -> conv name
        self.alive: list[Tensor] = []  # the conv outputs themselves, so that no later tensor reuses an id()
        self.bn_input: dict[str, str | None] = {}
        self.counter = 0

    def attach(self) -> None:
        for name, module in self.modules:
            try:
                self.handles.append(module.register_forward_hook(self._hook(name, module)))
            except (RuntimeError, AttributeError, ModelError):  # inside a compiled TorchScript call
                self.refused.add(name)

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.alive.clear()

    def _hook(self, name: str, module: nn.Module):
        def hook(_m: nn.Module, inputs: tuple, out: object) -> None:
            self.calls[name] = self.calls.get(name, 0) + 1
            self.counter += 1
            self.order[name] = self.counter  # containers finish after their children
            if isinstance(module, nn.BatchNorm2d) and module.track_running_stats and inputs:
                self.bn_input[name] = self.conv_of.get(id(inputs[0]))
            if isinstance(out, Tensor):
                self.shapes[name] = tuple(out.shape[1:])
                if isinstance(module, nn.Conv2d):
                    self.conv_of[id(out)] = name
                    self.alive.append(out)
                if self.keep_outputs:
                    self.outputs[name] = out.detach().clone()
        return hook

    def layers(self, input_shape: tuple[int, int, int]) -> list[LayerInfo]:
        """Every named module with its per-image output shape and the layout inferred for it (with the
        model's prefix tokens and the module's type as hints, :mod:`xaicli.models.layout`)."""
        prefix = prefix_tokens(self.model)
        size = (int(input_shape[-2]), int(input_shape[-1]))
        infos = []
        for n, m in self.modules:
            if not n:
                continue
            shape, kind = self.shapes.get(n), type_name(m)
            layout = None
            if shape is not None:
                layout = infer_layout(shape, size, prefix=prefix,
                                      channels_last=is_channels_last_norm(m, shape, kind))
            infos.append(LayerInfo(n, kind, shape, self.order.get(n, -1), n not in self.refused, layout))
        return infos

    def pairs(self) -> list[tuple[str, str]]:
        return [(conv, bn) for bn, conv in self.bn_input.items()
                if conv is not None and self.calls.get(conv) == 1 and self.calls.get(bn) == 1]
