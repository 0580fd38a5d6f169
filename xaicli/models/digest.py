"""What identifies a model's function: a digest of its code and of its weights, for the fingerprints of
:mod:`xaicli.outputs.fingerprint`.

Weights are hashed where they come from, as cheaply as that allows: the bytes of the file they were
loaded from (the builtin model's shipped weights, a ``checkpoint``, a TorchScript or ``torch.export``
file), else - a python factory without a checkpoint, a torchvision or timm architecture with random or
pretrained weights - the model's state dict,
every tensor's bytes once (SHA-256 runs at about 1 GB/s: a second for a ViT-L). Code is the factory
file (``file.py:function``) or the module's source file (``package.module:function``); TorchScript
and ``.pt2`` files hold both. Computed once per run, before the engine prepares (folds, compiles) the model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from xaicli.config import Config
from xaicli.models.builtin import BUILTIN_MODELS

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelDigest:
    """``source`` and ``architecture`` (builtin / torchvision name); ``code`` and ``weights``:
    ``sha256:<hex>`` digests (``code`` None when the code is xaicli's or torchvision's own, named by
    ``architecture``); ``description`` (``python factory /abs/f.py:build``) and ``weights_from`` (what was
    hashed) are for people and do not count as identity: moving a file keeps its digest."""

    source: str
    architecture: str | None
    code: str | None
    weights: str
    description: str
    weights_from: str

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def identity(self) -> dict[str, str | None]:
        """What decides the model's function (the part of :meth:`to_dict` a fingerprint hashes)."""
        return {"source": self.source, "architecture": self.architecture, "code": self.code,
                "weights": self.weights}


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def state_dict_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every entry's name, dtype, shape and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        data = t.cpu().contiguous()
        if data.numel():
            h.update(data.reshape(-1).view(torch.uint8).numpy().data)
    return "sha256:" + h.hexdigest()


def model_digest(cfg: Config, model: nn.Module) -> ModelDigest:
    """The digest of the model ``cfg`` describes, as loaded (``model``, before any preparation)."""
    m = cfg.model
    checkpoint = cfg.resolve_path(m.checkpoint).resolve() if m.checkpoint else None

    def weights(shipped: Path | None = None) -> tuple[str, str]:
        if checkpoint is not None:
            return file_digest(checkpoint), f"checkpoint {checkpoint}"
        if shipped is not None and shipped.is_file():
            return file_digest(shipped), f"shipped weights {shipped.name}"
        return state_dict_digest(model.state_dict()), "state_dict"

    if m.source == "builtin":
        digest, origin = weights(BUILTIN_MODELS[m.name]().weights)
        return ModelDigest("builtin", m.name, None, digest, f"builtin {m.name}", origin)
    if m.source in ("torchvision", "timm"):
        # the library's own architecture, named; kwargs (img_size, num_classes...) are part of it
        kwargs = json.dumps(m.kwargs, sort_keys=True, default=str)
        architecture = f"{m.name} {kwargs}" if m.kwargs else m.name
        digest, origin = weights()
        random = " (random weights)" if origin == "state_dict" and not m.pretrained else ""
        return ModelDigest(m.source, architecture, None, digest, f"{m.source} {architecture}{random}", origin)
    if m.source in ("torchscript", "export"):
        path = cfg.resolve_path(m.path).resolve()
        digest = file_digest(path)
        what = "TorchScript" if m.source == "torchscript" else "torch.export"
        return ModelDigest(m.source, None, digest, digest, f"{m.source} {path}", f"the {what} file")
    target, func = m.factory.rsplit(":", 1)
    code_file = _factory_file(target, cfg.base_dir)
    shown = f"{code_file}:{func}" if target.endswith(".py") else m.factory
    digest, origin = weights()
    code = file_digest(code_file) if code_file else f"module {target}"
    return ModelDigest("python", None, code, digest, f"python factory {shown}", origin)


def _factory_file(target: str, base_dir: Path) -> Path | None:
    """The source file of a factory: the ``.py`` file itself, or the imported module's file."""
    if target.endswith(".py"):
        file = Path(target)
        return (file if file.is_absolute() else base_dir / file).resolve()
    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None) if spec is not None else None
    return Path(origin).resolve() if origin and Path(origin).is_file() else None
