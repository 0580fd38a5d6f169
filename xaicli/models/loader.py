"""Load a model from a config: builtin, torchvision or timm architecture (+ checkpoint), TorchScript file,
``torch.export`` program or a Python factory, with the preprocessing that feeds it. Every failure becomes
a :class:`~xaicli.errors.ModelError` (or a ConfigError naming the key) that says what to fix.

Preprocessing defaults come from the model where it has its own (builtin models; timm's
``resolve_data_config``: size, interpolation, mean, std and the resize-then-centre-crop of ``crop_pct``;
an exported program's example input size; a user transform's ``Normalize``), else ImageNet's; every
``preprocess`` key that is set wins.

Hugging Face ``transformers`` classifiers return a ``ModelOutput``: a model whose output carries
``.logits`` (or a ``"logits"`` key) gets a forward hook on its root that returns just the logits, so
everything downstream sees a ``(B, N)`` tensor and the layer names stay the model's own.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xaicli.config import Config, ModelConfig
from xaicli.errors import ConfigError, ModelError, UnknownNameError
from xaicli.models.builtin import BUILTIN_MODELS
from xaicli.models.probe import ModelProbe, probe_model
from xaicli.models.transform import UserTransform, load_transform
from xaicli.timing import NullClock, StageClock

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Feeding:
    """How images become the model's input: the model's defaults, then the config's ``preprocess`` keys."""

    size: tuple[int, int] = (224, 224)
    mode: str = "RGB"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: str = "exact"  # exact | shorter (Resize(resize_size) + CenterCrop(size))
    resize_size: int | None = None
    interpolation: str = "bilinear"


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
    resize: str = "exact"
    resize_size: int | None = None
    interpolation: str = "bilinear"
    transform: UserTransform | None = field(default=None, repr=False)
    probe: ModelProbe | None = field(default=None, repr=False)  # the one probe forward pass at load time

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
    kwargs = {**cfg.kwargs, "weights": None}
    state = _read_state_dict(checkpoint) if checkpoint else None
    num_classes = cfg.num_classes
    if num_classes is None and state is not None:
        skeleton = _skeleton(lambda: torchvision.models.get_model(cfg.name, **kwargs))
        num_classes = _head_size(state, skeleton or torchvision.models.get_model(cfg.name, **kwargs))
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


def _import_object(spec: str, key: str, base_dir: Path, what: str = "") -> Any:
    """The object ``name`` of a ``package.module:name`` or ``path/to/file.py:name`` spec (``what``: how the
    error calls it when missing, e.g. "callable ")."""
    if ":" not in spec:
        raise ConfigError(key, f"expected 'package.module:name' or 'file.py:name', got {spec!r}")
    target, name = spec.rsplit(":", 1)
    if target.endswith(".py"):
        file = Path(target) if Path(target).is_absolute() else base_dir / target
        if not file.is_file():
            raise ConfigError(key, f"file not found: {file}")
        mod_name = f"_xaicli_{key.replace('.', '_')}_{file.stem}"
        spec_obj = importlib.util.spec_from_file_location(mod_name, file)
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[mod_name] = module
        try:
            spec_obj.loader.exec_module(module)
        except SystemExit as err:  # the file called sys.exit() / exit(): not a success, not our exit code
            sys.modules.pop(mod_name, None)
            raise ConfigError(key, f"cannot load {file}: it called exit({err.code!r}) while "
                              "being imported") from err
        except Exception as err:  # a syntax error or any exception while running the user's file
            sys.modules.pop(mod_name, None)
            raise ConfigError(key, f"cannot load {file}: {type(err).__name__}: {err}") from err
    else:
        try:
            module = importlib.import_module(target)
        except SystemExit as err:
            raise ConfigError(key, f"cannot import module {target!r}: it called "
                              f"exit({err.code!r}) while being imported") from err
        except Exception as err:  # ImportError, or whatever the module raises while being imported
            raise ConfigError(key, f"cannot import module {target!r}: {type(err).__name__}: {err}") from err
    if not hasattr(module, name):
        raise ConfigError(key, f"{target!r} has no {what}{name!r}")
    return getattr(module, name)


def _factory(spec: str, base_dir: Path) -> nn.Module:
    if ":" not in spec:
        raise ConfigError("model.factory",
                          f"expected 'package.module:function' or 'file.py:function', got {spec!r}")
    func = _import_object(spec, "model.factory", base_dir, what="callable ")
    if not callable(func):
        target, name = spec.rsplit(":", 1)
        raise ConfigError("model.factory", f"{target!r} has no callable {name!r}")
    try:
        model = func()
    except SystemExit as err:  # a factory that exits the interpreter must not end the run with its code
        raise ModelError(f"factory {spec} called exit({err.code!r}) instead of returning a model") from err
    except Exception as err:  # the user's factory failed: say so, without a traceback
        raise ModelError(f"factory {spec} raised {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ModelError(f"factory {spec} returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def _timm(cfg: ModelConfig, checkpoint: Path | None) -> tuple[nn.Module, Feeding]:
    """``timm.create_model(name, pretrained=...)`` (+ checkpoint) and timm's own preprocessing."""
    try:
        import timm
    except ImportError as err:
        raise ConfigError("model.source", "source 'timm' needs the optional extra: pip install 'xaicli[timm]'"
                          ) from err
    if not timm.is_model(cfg.name):
        raise UnknownNameError("timm architecture", cfg.name, timm.list_models(), key="model.name")
    state = _read_state_dict(checkpoint) if checkpoint else None
    kwargs: dict[str, Any] = {**cfg.kwargs, "pretrained": cfg.pretrained}
    num_classes = cfg.num_classes
    if num_classes is None and state is not None:
        num_classes = _head_size(state, timm.create_model(cfg.name, **{**kwargs, "pretrained": False}))
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = timm.create_model(cfg.name, **kwargs)
    except Exception as err:  # pretrained weights unreachable, bad kwargs: one line that says which
        why = "downloading its pretrained weights failed (no hub access?); " if cfg.pretrained else ""
        raise ModelError(f"timm cannot create {cfg.name!r}: {why}{type(err).__name__}: {err}") from err
    if state is not None:
        _load_weights(model, state, checkpoint)
    return model, _timm_feeding(model)


def _timm_feeding(model: nn.Module) -> Feeding:
    """timm's eval transform as a :class:`Feeding`: ``Resize(floor(size / crop_pct))`` (the shorter side)
    then ``CenterCrop(size)``, with the model's interpolation, mean and std (timm's transforms_factory)."""
    from timm.data import resolve_data_config

    data = resolve_data_config({}, model=model)
    channels, h, w = data["input_size"]
    crop_pct = data.get("crop_pct") or 0.875
    center = data.get("crop_mode", "center") == "center"
    interpolation = data.get("interpolation", "bilinear")
    return Feeding(size=(h, w), mode="L" if channels == 1 else "RGB", mean=tuple(data["mean"]),
                   std=tuple(data["std"]), resize="shorter" if center else "exact",
                   resize_size=math.floor(min(h, w) / crop_pct) if center and h == w else None,
                   interpolation=interpolation if interpolation in ("bilinear", "bicubic") else "bilinear")


def _torchvision_pretrained(name: str, kwargs: dict[str, Any]) -> tuple[nn.Module, Feeding]:
    """The architecture with its published weights, and the preprocessing those weights were trained with
    (``weights.transforms()``: ``Resize(resize_size)`` + ``CenterCrop(crop_size)``, interpolation, stats)."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        model = torchvision.models.get_model(name, weights=weights, **kwargs)
    except Exception as err:  # no network, no published weights: say so in one line
        raise ModelError(f"torchvision cannot load pretrained weights for {name!r} (no hub access?): "
                         f"{type(err).__name__}: {err}") from err
    t = weights.transforms()
    crop = int(t.crop_size[0])
    interpolation = str(getattr(t.interpolation, "value", t.interpolation))
    if interpolation not in ("bilinear", "bicubic"):
        interpolation = "bilinear"
    return model, Feeding(size=(crop, crop), mean=tuple(t.mean), std=tuple(t.std), resize="shorter",
                          resize_size=int(t.resize_size[0]), interpolation=interpolation)


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
        model, builtin, feeding, probe_batch = _build(cfg)
    with clock.foreground("probe"):
        return _resolve(cfg, model, builtin, feeding, probe_batch, keep_probe_outputs)


def _build(cfg: Config) -> tuple[nn.Module, Any, Feeding, int]:
    """The model in eval mode with its weights, its builtin spec (None unless ``source: builtin``), the
    model's own preprocessing defaults, and the batch size of the probe forward pass (an exported
    program's is one more than it was traced with, which proves its batch dimension is dynamic)."""
    m = cfg.model
    checkpoint = cfg.resolve_path(m.checkpoint) if m.checkpoint else None
    builtin = None
    feeding = Feeding()
    probe_batch = 1  # a dummy forward of this many images checks the input shape
    if m.source == "builtin":
        if m.name not in BUILTIN_MODELS:
            raise UnknownNameError("builtin model", m.name, BUILTIN_MODELS, key="model.name")
        builtin = BUILTIN_MODELS[m.name]()
        model = builtin.factory()
        feeding = Feeding(builtin.size, builtin.mode, builtin.mean, builtin.std)
        if checkpoint:
            _load_weights(model, _read_state_dict(checkpoint), checkpoint)
    elif m.source == "torchvision":
        if m.pretrained:
            model, feeding = _torchvision_pretrained(m.name, m.kwargs)
        else:
            model = _torchvision(m, checkpoint)
    elif m.source == "timm":
        model, feeding = _timm(m, checkpoint)
    elif m.source == "torchscript":
        from xaicli.models.torchscript import load_torchscript

        model = load_torchscript(cfg.resolve_path(m.path))
    elif m.source == "export":
        from xaicli.models.exported import load_exported

        model, shape = load_exported(cfg.resolve_path(m.path))
        if shape is not None:  # the exported program's own input size (usually static)
            feeding = replace(feeding, size=shape[2:], mode="L" if shape[1] == 1 else "RGB")
        probe_batch = (shape[0] if shape else 1) + 1  # a batch size it was not traced with
    else:
        model = _factory(m.factory, cfg.base_dir)
        if checkpoint:
            _load_weights(model, _read_state_dict(checkpoint), checkpoint)
    return model.eval(), builtin, feeding, probe_batch


def _resolve(cfg: Config, model: nn.Module, builtin: Any, feeding: Feeding, probe_batch: int,
             keep_probe_outputs: bool) -> LoadedModel:
    """Preprocessing and classes resolved against the model's probe (which also proves the input shape
    works and gives a Hugging Face ``ModelOutput`` its ``.logits`` hook, :mod:`.probe`)."""
    feeding, transform = _configured(cfg, feeding)
    channels = channels_of(feeding.mode)
    probe = probe_model(model, (channels, *feeding.size), keep_outputs=keep_probe_outputs, batch=probe_batch)
    n_out = probe.num_outputs
    classes = _classes(cfg, list(builtin.classes) if builtin else None, n_out)
    if len(classes) != n_out:
        raise ConfigError("model.classes", f"{len(classes)} class names for a model with {n_out} outputs")
    f, default = feeding, builtin.default_layer if builtin else None
    return LoadedModel(model, classes, f.size, f.mode, f.mean, f.std, default, f.resize, f.resize_size,
                       f.interpolation, transform, probe)


def _configured(cfg: Config, model_default: Feeding) -> tuple[Feeding, UserTransform | None]:
    """The model's feeding with every ``preprocess`` key that is set (and a user transform) applied."""
    p = cfg.preprocess
    size, mode, mean, std = model_default.size, model_default.mode, model_default.mean, model_default.std
    if p.mode is not None and p.mode != mode:  # switching mode without stats: neutral stats
        mode = p.mode
        mean = std = (0.5,) * channels_of(mode)
    transform = None
    if p.transform is not None:
        obj = _import_object(p.transform, "preprocess.transform", cfg.base_dir)
        transform = load_transform(obj, p.transform, mode)
        size = transform.size
        if transform.mean is not None:
            mean, std = transform.mean, transform.std
    if p.size:
        size = tuple(p.size * 2 if len(p.size) == 1 else p.size)
        if transform is not None and size != transform.size:
            raise ConfigError("preprocess.size", f"{list(size)} but preprocess.transform makes "
                              f"{list(transform.size)} images; drop one of them")
    mean = tuple(p.mean or mean)
    std = tuple(p.std or std)
    channels = channels_of(mode)
    for name, v in (("mean", mean), ("std", std)):
        if len(v) not in (1, channels):
            raise ConfigError(f"preprocess.{name}",
                              f"has {len(v)} values but mode {mode!r} has {channels} channels")
    resize = p.resize or model_default.resize
    resize_size = p.resize_size if p.resize_size is not None else model_default.resize_size
    if p.resize_size is not None and p.resize is None:
        resize = "shorter"  # a resize_size only means something with the centre crop
    if resize_size is not None and resize_size < min(size):
        raise ConfigError("preprocess.resize_size", f"{resize_size} is smaller than the crop {list(size)}; "
                          "the shorter side must be at least the crop size")
    interpolation = p.interpolation or model_default.interpolation
    return Feeding(size, mode, mean, std, resize, resize_size, interpolation), transform


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
