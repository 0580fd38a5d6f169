"""Failures end with one line and a distinct exit code (issue 10): OUTDIR problems are found before the
model loads (exit 2), models that cannot be explained are refused before the run, a factory that exits the
interpreter does not pass for success, configs that expand without bound are refused before expanding,
and memory per image is bounded (reduced decoding, a byte budget for the decode threads)."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import xaicli_command, xaicli_env
from PIL import Image

from xaicli.errors import ExitCode

COUNTING = '''
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_xaicli_counting_tiny", TINY_CNN_FILE)
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)


def build():
    log = Path(__file__).with_suffix(".count")
    log.write_text(log.read_text() + "x" if log.exists() else "x")
    return _tiny.build()
'''


@pytest.fixture
def counted(tmp_path, tiny_config, tiny_cnn_factory_file, write_config):
    """A config whose factory counts its calls in ``counting.count``; returns (config path, count file)."""
    (tmp_path / "counting.py").write_text(COUNTING.replace("TINY_CNN_FILE", repr(str(tiny_cnn_factory_file))))
    tiny_config["model"]["factory"] = "counting.py:build"
    return write_config(tmp_path, tiny_config), tmp_path / "counting.count"


def one_error_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.stderr
    return lines[0]


@contextmanager
def read_only(path: Path):
    """``path`` made unwritable, for root too (``chattr +i``; plain permissions do not stop root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)],
                                                         capture_output=True).returncode:
        pytest.skip("running as root without chattr +i: cannot make a folder read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


# --- OUTDIR problems: exit 2, before the model is loaded --------------------------------------------------


def test_outdir_that_is_a_file(cli, tmp_path, counted, image_tree):
    cfg, count = counted
    (tmp_path / "out").write_text("I am a file")
    line = one_error_line(cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out"))
    assert "OUTDIR" in line and "not a directory" in line
    assert not count.exists(), "the model was loaded before checking OUTDIR"


def test_read_only_outdir(cli, tmp_path, counted, image_tree):
    cfg, count = counted
    out = tmp_path / "out"
    with read_only(out):
        res = cli("explain", image_tree, "-c", cfg, "-o", out)
    assert res.exit_code == ExitCode.USAGE, res
    line = one_error_line(res)
    assert "OUTDIR" in line and "not writable" in line
    assert not count.exists(), "the model was loaded before checking OUTDIR"


def test_outdir_below_a_read_only_folder(cli, tmp_path, counted, image_tree):
    cfg, count = counted
    with read_only(tmp_path / "locked"):
        res = cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "locked" / "out")
    assert res.exit_code == ExitCode.USAGE, res
    assert "cannot be created" in one_error_line(res)
    assert not count.exists()


@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_manifest_that_is_not_a_regular_file(cli, tmp_path, counted, image_tree, kind):
    cfg, count = counted
    out = tmp_path / "out"
    out.mkdir()
    if kind == "directory":
        (out / "manifest.jsonl").mkdir()
    else:
        (tmp_path / "elsewhere.jsonl").write_text("")
        (out / "manifest.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    res = cli("explain", image_tree, "-c", cfg, "-o", out)
    assert res.exit_code == ExitCode.USAGE, res
    assert "manifest.jsonl" in one_error_line(res) and "not a regular file" in res.stderr
    assert not count.exists()
    if kind == "symlink":
        assert (tmp_path / "elsewhere.jsonl").read_text() == ""  # not followed, not written


def test_missing_input_is_reported_before_the_model_loads(cli, tmp_path, counted, image_tree):
    cfg, count = counted
    res = cli("explain", image_tree, tmp_path / "nope", "-c", cfg, "-o", tmp_path / "out")
    assert res.exit_code == ExitCode.USAGE and "input not found" in one_error_line(res)
    assert not count.exists() and not (tmp_path / "out").exists()


# --- models that cannot be explained, or that exit --------------------------------------------------------

DETACHED = '''
import importlib.util

import torch

_spec = importlib.util.spec_from_file_location("_xaicli_detached_tiny", TINY_CNN_FILE)
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)


class Detached(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _tiny.build()

    def forward(self, x):
        return self.net(x).detach()


def build():
    return Detached().eval()


def build_and_exit():
    raise SystemExit(0)


class Exits(Detached):
    def forward(self, x):
        if x.shape[0] > 1:
            import sys
            sys.exit(0)
        return self.net(x)


def build_exits_in_forward():
    return Exits().eval()
'''


@pytest.fixture
def odd_models(tmp_path, tiny_cnn_factory_file):
    (tmp_path / "odd.py").write_text(DETACHED.replace("TINY_CNN_FILE", repr(str(tiny_cnn_factory_file))))
    return tmp_path / "odd.py"


def test_a_model_detached_from_the_graph_is_refused_before_the_run(cli, tmp_path, write_config, tiny_config,
                                                                    image_tree, odd_models):
    tiny_config["model"]["factory"] = f"{odd_models}:build"
    tiny_config["methods"] = [{"name": "gradcam", "layers": ["net.features.1.conv"]}]
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == ExitCode.USAGE, res
    line = one_error_line(res)
    assert "gradcam" in line and "detached" in line
    assert not (out / "manifest.jsonl").exists()
    tiny_config["methods"] = [{"name": "scorecam", "layers": ["net.features.1.conv"]}]  # no gradients needed
    assert cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out).exit_code == 0


def test_a_factory_that_exits_the_interpreter_is_not_success(cli, tmp_path, write_config, tiny_config,
                                                             image_tree, odd_models):
    tiny_config["model"]["factory"] = f"{odd_models}:build_and_exit"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", tmp_path / "out")
    assert res.exit_code == ExitCode.USAGE, res
    assert "exit" in one_error_line(res)


def test_a_model_that_exits_during_the_run_fails_the_run(cli, tmp_path, write_config, tiny_config, image_tree,
                                                         odd_models):
    tiny_config["model"]["factory"] = f"{odd_models}:build_exits_in_forward"
    tiny_config["methods"] = [{"name": "gradcam", "layers": ["net.features.1.conv"]}]
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == ExitCode.RUN_FAILED, res
    assert res.stderr.strip().splitlines()[-1].startswith("error: the run failed: SystemExit")
    import json

    assert json.loads((out / "run.json").read_text())["status"] == "failed"


def test_a_pickled_whole_model_checkpoint_is_explained_in_one_whole_line(cli, tmp_path, write_config,
                                                                          image_tree):
    import torch
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=3), tmp_path / "whole.pt")
    cfg = write_config(tmp_path, {"model": {"source": "torchvision", "name": "resnet18",
                                            "checkpoint": "whole.pt"}})
    line = one_error_line(cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out"))
    assert "torchvision.models.resnet.ResNet" in line and "model.state_dict()" in line
    assert line.endswith(")") or line.endswith(".") or line[-1].isalnum()


# --- configs that expand without bound ------------------------------------------------------------------

ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
preprocess: {size: *h}
"""


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 600

    def limit_memory() -> None:  # should the refusal regress, fail fast instead of swapping
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    t0 = time.monotonic()
    proc = subprocess.run(xaicli_command("layers", "-c", cfg), env=xaicli_env(), capture_output=True,
                          text=True, timeout=120, preexec_fn=limit_memory)
    assert proc.returncode == ExitCode.USAGE, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "alias" in lines[0] and str(cfg) in lines[0], proc.stderr
    assert time.monotonic() - t0 < 60


def test_a_few_aliases_are_fine(tmp_path):
    from xaicli.config import load_config

    cfg = tmp_path / "anchors.yaml"
    cfg.write_text("preprocess: {size: &s [16, 20], mean: [0.5], std: [0.25]}\n"
                   "methods:\n  - {name: gradcam, options: &o {upsample: bilinear}}\n"
                   "  - {name: gradcam_pp, options: *o}\n")
    assert load_config(cfg).methods[1].options == {"upsample": "bilinear"}


# --- memory per image -------------------------------------------------------------------------------------


def _photo(path: Path, size: tuple[int, int], **save) -> Path:
    """A smooth photo-like image (gradients plus mild noise), ``size`` = (W, H)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    rgb = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 97.0) * np.cos(yy / 61.0)], axis=-1) * 255
    rgb += rng.normal(0, 4, rgb.shape)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, **save)
    return path


@pytest.mark.parametrize("suffix, save", [(".jpg", {"quality": 90}), (".png", {"compress_level": 1})])
def test_large_images_are_decoded_reduced_to_a_few_times_the_model_size(tmp_path, suffix, save):
    from xaicli.engine.decode import load_image
    from xaicli.engine.preprocess import Preprocess

    path = _photo(tmp_path / f"big{suffix}", (3000, 2000), **save)
    full = load_image(path, "RGB")
    small = load_image(path, "RGB", reduce_to=(64, 64))
    assert full.shape == (2000, 3000, 3)
    assert 64 <= min(small.shape[:2]) < 4 * 64, small.shape
    pre = Preprocess((32, 32), "RGB", (0.5,), (0.25,))
    import torch

    reduced = pre.load(str(path))
    exact = pre.resize_tensor(torch.from_numpy(full).permute(2, 0, 1)[None])[0]
    assert (reduced - exact).abs().mean() < 0.01 and (reduced - exact).abs().max() < 0.1


def test_the_decode_threads_share_a_byte_budget():
    """At any moment the reservations in flight fit the budget, or one oversized image runs alone."""
    from xaicli.engine.loader import ByteBudget

    budget = ByteBudget(100)
    active: list[int] = []
    seen: list[list[int]] = []
    lock = threading.Lock()

    def work(nbytes: int) -> None:
        with budget.reserve(nbytes):
            with lock:
                active.append(nbytes)
                seen.append(list(active))
            time.sleep(0.02)
            with lock:
                active.remove(nbytes)

    threads = [threading.Thread(target=work, args=(n,)) for n in (60, 60, 30, 250, 10, 90, 40, 20, 20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads) and len(seen) == len(threads)
    assert all(sum(s) <= 100 or s == [250] for s in seen), seen
    assert max(len(s) for s in seen) > 1  # and they did run side by side
    assert budget.in_use == 0


def test_byte_budget_admits_an_oversized_request_only_alone():
    from xaicli.engine.loader import ByteBudget

    budget = ByteBudget(100)
    order, held = [], []

    def big() -> None:
        held.append(budget.reserve(500))
        held[0].__enter__()
        order.append("big")

    with budget.reserve(50):
        t = threading.Thread(target=big)
        t.start()
        time.sleep(0.1)
        assert order == []  # waits while anything else is in flight
    t.join(timeout=10)
    assert order == ["big"] and budget.in_use == 500
