"""Shared pytest fixtures. Keep each group small and generic; add new groups below with a header."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

# === End-to-end / CLI fixtures: a tiny factory model, configs, an image tree, the CLI runner ==========

#: Class names of the tiny CNN (4 outputs).
TINY_CLASSES = ["cat", "dog", "bird", "fish"]

#: Source of a python-factory model file: conv-bn-relu(inplace) x2, adaptive pool, linear to 4 classes.
#: ``build()`` is deterministic (fixed seed, non-trivial batch-norm statistics) and remembers every model
#: it built in ``BUILT``, so a test can inspect the instance a run used.
TINY_CNN_SOURCE = '''
from collections import OrderedDict

import torch
from torch import nn

BUILT = []


def _block(cin, cout):
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(cin, cout, 3, padding=1), bn=nn.BatchNorm2d(cout),
                                     relu=nn.ReLU(inplace=True)))


class TinyCNN(nn.Module):
    def __init__(self, in_channels=3, num_classes=4):
        super().__init__()
        self.features = nn.Sequential(_block(in_channels, 6), _block(6, 8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def build():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = TinyCNN()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    with torch.no_grad():
        model.fc.weight.mul_(8.0)  # spread the logits so the top-k order is clear
    model.eval()
    BUILT.append(model)
    return model
'''


@pytest.fixture
def tiny_cnn_factory_file(tmp_path: Path) -> Path:
    """A python factory file (``build`` returns the tiny CNN); use as ``f"{path}:build"``."""
    path = tmp_path / "tiny_cnn.py"
    path.write_text(TINY_CNN_SOURCE, encoding="utf-8")
    return path


def _write_config(directory: Path, data: dict[str, Any], name: str = "config.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def write_config() -> Callable[..., Path]:
    """``write_config(tmp_path, {...}) -> Path`` of a YAML config file written into that folder."""
    return _write_config


@pytest.fixture
def tiny_config(tiny_cnn_factory_file: Path) -> dict[str, Any]:
    """A config dict for the tiny CNN at 16x20 (H x W) RGB input, Grad-CAM on the 2nd conv, top-2, CPU."""
    return {
        "model": {"source": "python", "factory": f"{tiny_cnn_factory_file}:build",
                  "classes": list(TINY_CLASSES)},
        "preprocess": {"size": [16, 20], "mode": "RGB", "mean": [0.5], "std": [0.25]},
        "methods": [{"name": "gradcam", "layers": ["features.1.conv"]}],
        "targets": {"topk": 2},
        "run": {"device": "cpu", "batch_size": 2, "workers": 1},
    }


def save_random_image(path: Path, size: tuple[int, int] = (16, 20), mode: str = "RGB", seed: int = 0,
                      **save_kwargs: Any) -> Path:
    """Write a random image of ``size`` (H, W) in Pillow ``mode``; the format follows the suffix."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = size
    data = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(data).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save_kwargs)
    return path


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """``images/{cat/a.png, cat/b.jpg, dog/c.png}``: three random 16x20 (H x W) RGB images, class folders."""
    root = tmp_path / "images"
    save_random_image(root / "cat" / "a.png", seed=1)
    save_random_image(root / "cat" / "b.jpg", seed=2, quality=95)
    save_random_image(root / "dog" / "c.png", seed=3)
    return root


class CliResult:
    """What one CLI call produced: exit code, stdout, stderr (kept apart), and any uncaught exception."""

    def __init__(self, result: Any):
        self.raw = result
        self.exit_code: int = result.exit_code
        self.stdout: str = result.stdout
        try:
            self.stderr: str = result.stderr
        except ValueError:  # stderr mixed into stdout by this runner
            self.stderr = ""
        self.output: str = result.output
        self.exception: BaseException | None = result.exception

    def __repr__(self) -> str:
        return f"CliResult(exit_code={self.exit_code}, stdout={self.stdout!r}, stderr={self.stderr!r})"


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    """``cli("explain", path, "-c", cfg, ...)``: run ``xaicli`` in-process (Typer's CliRunner); Paths ok.

    A ``SystemExit`` is the normal way out; any other exception is re-raised so tests see its traceback.
    """
    from typer.testing import CliRunner

    from xaicli.cli.app import app

    runner = CliRunner()

    def invoke(*args: Any, reraise: bool = True) -> CliResult:
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=not reraise)
        return CliResult(result)

    return invoke


# --- torch threads ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_single_thread():
    """Tiny CPU models: one intra-op thread avoids OpenMP spin-waiting, which on a busy 2-core runner
    made small forwards ~40x slower. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# === Subprocess runs (signals, kills, resource limits): the CLI as a user starts it ====================

REPO_ROOT = Path(__file__).resolve().parent.parent


def xaicli_env(**extra: str) -> dict[str, str]:
    """The environment of a ``python -m xaicli`` child: this checkout first on the path, one thread."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def xaicli_command(*args: Any) -> list[str]:
    import sys

    return [sys.executable, "-m", "xaicli", *map(str, args)]


def wait_for(condition: Callable[[], bool], timeout: float = 120.0, what: str = "condition",
             proc: Any = None) -> None:
    """Poll ``condition`` every 50 ms (robust on a loaded machine, unlike a fixed sleep)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"the process ended (rc {proc.returncode}) before: {what}\n{out[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for: {what}")
        time.sleep(0.05)


def manifest_lines(outdir: Path) -> list[str]:
    path = outdir / "manifest.jsonl"
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def strict_json(line: str) -> Any:
    """``json.loads`` that refuses the non-standard NaN / Infinity tokens, as jq and browsers do."""
    import json

    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(line, parse_constant=refuse)


#: A python-factory model around the tiny CNN that sleeps in every forward pass of a batch, so a run of a
#: few dozen images lasts long enough to be signalled or killed mid-way on any machine; with a HOLD file
#: it also waits while that file exists (a test releases it when it is ready).
SLOW_MODEL = '''
import importlib.util
import os
import time

import torch

_spec = importlib.util.spec_from_file_location("_xaicli_slow_tiny", TINY_CNN_FILE)
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)


class Slow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _tiny.build()

    def forward(self, x):
        if x.shape[0] > 1:
            time.sleep(SECONDS)
            deadline = time.monotonic() + 300
            while HOLD is not None and os.path.exists(HOLD) and time.monotonic() < deadline:
                time.sleep(0.05)
        return self.net(x)


def build():
    return Slow().eval()
'''


@pytest.fixture
def slow_config(tmp_path: Path, tiny_config: dict[str, Any], tiny_cnn_factory_file: Path
                ) -> Callable[..., dict]:
    """``slow_config(seconds=0.2, hold=None)``: the tiny config with a model that sleeps per forward of a
    batch (and waits while the file ``hold`` exists)."""

    def make(seconds: float = 0.2, hold: Path | None = None) -> dict[str, Any]:
        source = SLOW_MODEL.replace("TINY_CNN_FILE", repr(str(tiny_cnn_factory_file)))
        source = source.replace("SECONDS", repr(seconds)).replace("HOLD", repr(str(hold) if hold else None))
        (tmp_path / "slow_model.py").write_text(source, encoding="utf-8")
        factory = f"{tmp_path / 'slow_model.py'}:build"
        return {**tiny_config, "model": {**tiny_config["model"], "factory": factory},
                "methods": [{"name": "gradcam", "layers": ["net.features.1.conv"]}]}

    return make


def many_images(root: Path, n: int, seed: int = 0) -> Path:
    """``root/{cat,dog}/img_<i>.png``: ``n`` random 16x20 images."""
    for i in range(n):
        save_random_image(root / ("cat" if i % 2 else "dog") / f"img_{i:03d}.png", seed=seed + i)
    return root
