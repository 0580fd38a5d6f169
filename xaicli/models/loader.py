"""Load a model from a config: builtin, torchvision architecture (+ checkpoint), TorchScript file or a
Python factory. Every failure becomes a :class:`~xaicli.errors.ModelError` that says what to fix."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from xaicli.config import Config, ModelConfig
from xaicli.errors import ConfigError, ModelError, UnknownNameError
from xaicli.models.builtin import BUILTIN_MODELS
from xaicli.models.probe import ModelProbe, probe_model
from xaicli.timing import NullClock, StageClock

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class LoadedModel:
    """A model ready to explain, with everything needed to feed it and name its outputs."""

    model: nn.Module
    classes: list[str]
    size: tuple[int, int]
    mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_layer: str | None
    probe: ModelProbe | None = None  # the one probe forward pass at load time (:mod:`.probe`)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one model input."""
        return (channels_of(self.mode), *self.size)


def channels_of(mode: str) -> int:
    """Image channels of a preprocessing mode: 1 for "L", 3 for "RGB"."""
    return 1 if mode == "L" else 3


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (pickle, zip, RuntimeError); all mean "unreadable"
        raise ModelError(f"cannot read checkpoint {path} with torch.load(weights_only=True): "
                         f"{_load_error_line(err)}") from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"checkpoint {path} does not hold a state_dict (a mapping of tensor names to "
                         "tensors, optionally under 'state_dict' or 'model')")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _load_error_line(err: Exception) -> str:
    """torch.load's errors span many lines of advice (with ANSI codes); keep the line that says why, in
    words a user can act on, whole (cut at a word if it has to be cut at all)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:  # torch.save(model) instead of torch.save(model.state_dict())
        return (f"it holds a pickled Python object ({found.group(1)}), a whole model saved with "
                "torch.save(model), not a state_dict; save model.state_dict() instead (weights-only loading "
                "never runs pickled code), or use model.source: torchscript or python")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return shorten(lines[0] if lines else type(err).__name__, 300)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, with '...' when cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 3].rsplit(" ", 1)[0].rstrip(" ,;:")
    return cut + "..."


def _mismatch_summary(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """One line saying why ``state`` does not fit ``model``: shape mismatches, missing/unexpected keys."""
    own = model.state_dict()

    def few(keys: list[str]) -> str:
        return ", ".join(repr(k) for k in keys[:3]) + (", ..." if len(keys) > 3 else "")

    shapes = [f"{k} is {list(state[k].shape)} in the checkpoint but {list(v.shape)} in the model"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    parts = []
    if shapes:
        more = f" (and {len(shapes) - 1} more shape mismatch(es))" if len(shapes) > 1 else ""
        parts.append(shapes[0] + more)
    if missing:
        parts.append(f"{len(missing)} key(s) missing from the checkpoint: {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) in the checkpoint: {few(unexpected)}")
    return "; ".join(parts)


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        why = _mismatch_summary(model, state) or str(err).splitlines()[0]
        raise ModelError(f"checkpoint {path} does not fit the model: {why} "
                         f"(check model.name / model.num_classes)") from err


def _head_size(state: dict[str, torch.Tensor], model: nn.Module) -> int | None:
    """Classes in the checkpoint's final Linear layer, if it differs from the model's."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    name, layer = linears[-1]
    w = state.get(f"{name}.weight")
    return int(w.shape[0]) if w is not None and w.shape[0] != layer.out_features else None


def _torchvision(cfg: ModelConfig, checkpoint: Path | None) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if cfg.name not in names:
        raise UnknownNameError("torchvision architecture", cfg.name, names, key="model.name")
    kwargs = {"weights": None}
    state = _read_state_dict(checkpoint) if checkpoint else None
    num_classes = cfg.num_classes
    if num_classes is None and state is not None:
        skeleton = _skeleton(lambda: torchvision.models.get_model(cfg.name, weights=None))
        num_classes = _head_size(state, skeleton or torchvision.models.get_model(cfg.name, weights=None))
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    build = functools.partial(torchvision.models.get_model, cfg.name, **kwargs)
    if state is None:
        return build()
    return _with_weights(build, state, checkpoint)


def _skeleton(build: Callable[[], nn.Module]) -> nn.Module | None:
    """The model built on the meta device (shapes only: no weights are initialised); None when its
    constructor needs real tensors."""
    try:
        with torch.device("meta"):
            return build()
    except Exception:  # a constructor computing with tensor values (.item(), NumPy) cannot run on meta
        return None


def _with_weights(build: Callable[[], nn.Module], state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """The model with the checkpoint's weights. Initialising weights the checkpoint replaces costs more
    than loading it (ResNet-18: ~0.15 s of CPU), so when the checkpoint matches the model exactly (names,
    shapes, dtypes; contiguous tensors) the model is built on the meta device and given the checkpoint's
    tensors; otherwise it is built and loaded the ordinary way (which also reports any mismatch)."""
    skeleton = _skeleton(build)
    own = skeleton.state_dict() if skeleton is not None else {}
    same = own.keys() == state.keys() and all(
        own[k].shape == v.shape and own[k].dtype == v.dtype and v.is_contiguous() for k, v in state.items())
    if same:
        skeleton.load_state_dict(state, strict=True, assign=True)
        if not any(t.is_meta for t in (*skeleton.parameters(), *skeleton.buffers())):
            return skeleton
    model = build()
    _load_weights(model, state, path)
    return model


def _factory(spec: str, base_dir: Path) -> nn.Module:
    if ":" not in spec:
        raise ConfigError("model.factory",
                          f"expected 'package.module:function' or 'file.py:function', got {spec!r}")
    target, func_name = spec.rsplit(":", 1)
    if target.endswith(".py"):
        file = Path(target) if Path(target).is_absolute() else base_dir / target
        if not file.is_file():
            raise ConfigError("model.factory", f"file not found: {file}")
        mod_name = f"_xaicli_factory_{file.stem}"
        spec_obj = importlib.util.spec_from_file_location(mod_name, file)
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[mod_name] = module
        try:
            spec_obj.loader.exec_module(module)
        except SystemExit as err:  # the file called sys.exit() / exit(): not a success, not our exit code
            sys.modules.pop(mod_name, None)
            raise ConfigError("model.factory", f"cannot load {file}: it called exit({err.code!r}) while "
                              "being imported") from err
        except Exception as err:  # a syntax error or any exception while running the user's file
            sys.modules.pop(mod_name, None)
            raise ConfigError("model.factory", f"cannot load {file}: {type(err).__name__}: {err}") from err
    else:
        try:
            module = importlib.import_module(target)
        except SystemExit as err:
            raise ConfigError("model.factory", f"cannot import module {target!r}: it called "
                              f"exit({err.code!r}) while being imported") from err
        except Exception as err:  # ImportError, or whatever the module raises while being imported
            raise ConfigError("model.factory", f"cannot import module {target!r}: "
                              f"{type(err).__name__}: {err}") from err
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError("model.factory", f"{target!r} has no callable {func_name!r}")
    try:
        model = func()
    except SystemExit as err:  # a factory that exits the interpreter must not end the run with its code
        raise ModelError(f"factory {spec} called exit({err.code!r}) instead of returning a model") from err
    except Exception as err:  # the user's factory failed: say so, without a traceback
        raise ModelError(f"factory {spec} raised {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ModelError(f"factory {spec} returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def _classes(cfg: Config, default: list[str] | None, n_out: int | None) -> list[str]:
    value = cfg.model.classes
    if isinstance(value, str):
        lines = cfg.resolve_path(value).read_text(encoding="utf-8").splitlines()
        return [ln.strip() for ln in lines if ln.strip()]
    if value is not None:
        return list(value)
    if default is not None:
        return default
    return [str(i) for i in range(n_out or 0)]


def load_model(cfg: Config, keep_probe_outputs: bool = False, clock: StageClock | None = None
               ) -> LoadedModel:
    """Build the model in eval mode on the CPU, with its classes and preprocessing resolved, and probe it
    once (:func:`~xaicli.models.probe.probe_model`; ``keep_probe_outputs``: keep every module's output,
    for the batch-norm folding check). ``clock`` records the ``model`` and ``probe`` stages."""
    clock = clock or NullClock()
    with clock.foreground("model"):
        model, builtin = _build(cfg)
    with clock.foreground("probe"):
        return _resolve(cfg, model, builtin, keep_probe_outputs)


def _build(cfg: Config) -> tuple[nn.Module, object]:
    """The model in eval mode with its weights, and its builtin spec (None unless ``source: builtin``)."""
    m = cfg.model
    checkpoint = cfg.resolve_path(m.checkpoint) if m.checkpoint else None
    builtin = None
    if m.source == "builtin":
        if m.name not in BUILTIN_MODELS:
            raise UnknownNameError("builtin model", m.name, BUILTIN_MODELS, key="model.name")
        builtin = BUILTIN_MODELS[m.name]()
        model = builtin.factory()
        if checkpoint:
            _load_weights(model, _read_state_dict(checkpoint), checkpoint)
    elif m.source == "torchvision":
        model = _torchvision(m, checkpoint)
    elif m.source == "torchscript":
        from xaicli.models.torchscript import load_torchscript

        model = load_torchscript(cfg.resolve_path(m.path))
    else:
        model = _factory(m.factory, cfg.base_dir)
        if checkpoint:
            _load_weights(model, _read_state_dict(checkpoint), checkpoint)
    return model.eval(), builtin


def _resolve(cfg: Config, model: nn.Module, builtin, keep_probe_outputs: bool) -> LoadedModel:
    """Preprocessing and classes resolved against the model's probe."""
    p = cfg.preprocess
    if builtin is not None:
        size, mode, mean, std = builtin.size, builtin.mode, builtin.mean, builtin.std
    else:
        size, mode, mean, std = (224, 224), "RGB", IMAGENET_MEAN, IMAGENET_STD
    if p.mode is not None and p.mode != mode:  # switching mode without stats: neutral stats
        mode = p.mode
        mean = std = (0.5,) * channels_of(mode)
    size = tuple(p.size * 2 if p.size and len(p.size) == 1 else p.size or size)
    mean = tuple(p.mean or mean)
    std = tuple(p.std or std)
    channels = channels_of(mode)
    for name, v in (("mean", mean), ("std", std)):
        if len(v) not in (1, channels):
            raise ConfigError(f"preprocess.{name}",
                              f"has {len(v)} values but mode {mode!r} has {channels} channels")
    probe = probe_model(model, (channels, *size), keep_outputs=keep_probe_outputs)
    n_out = probe.num_outputs
    classes = _classes(cfg, list(builtin.classes) if builtin else None, n_out)
    if len(classes) != n_out:
        raise ConfigError("model.classes", f"{len(classes)} class names for a model with {n_out} outputs")
    return LoadedModel(model, classes, size, mode, mean, std, builtin.default_layer if builtin else None,
                       probe)


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; explicit devices are checked, not silently replaced."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device",
                          f"{name!r} requested but CUDA is not available here (use auto or cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError("run.device", f"{name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev
