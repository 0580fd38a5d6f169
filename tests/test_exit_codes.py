"""Exit codes are a contract (xaicli.errors.ExitCode): 0 ok, 1 some inputs unreadable, 2 usage/config,
3 a gate failed, 4 the run failed - the last one with one line on stderr and the traceback in a log."""

from __future__ import annotations

import json
from pathlib import Path

from xaicli.errors import ExitCode

RAISING_MODEL = '''
import importlib.util

import torch

_spec = importlib.util.spec_from_file_location("_xaicli_test_broken_tiny", TINY_CNN_FILE)
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)
build_tiny = _tiny.build


class Broken(torch.nn.Module):
    """Loads and answers the probe passes; raises on the first real batch (more than one image)."""

    def __init__(self):
        super().__init__()
        self.net = build_tiny()

    def forward(self, x):
        if x.shape[0] > 1:
            raise ValueError("the model's forward is broken\\nsecond line of the message")
        return self.net(x)


def build():
    return Broken().eval()
'''


def _broken_config(tmp_path: Path, tiny_config: dict, tiny_cnn_factory_file: Path, write_config) -> Path:
    source = RAISING_MODEL.replace("TINY_CNN_FILE", repr(str(tiny_cnn_factory_file)))
    (tmp_path / "broken.py").write_text(source)
    broken = {**tiny_config, "model": {**tiny_config["model"], "factory": "broken.py:build"},
              "methods": [{"name": "gradcam", "layers": ["net.features.1.conv"]}]}
    return write_config(tmp_path, broken)


def test_exit_code_values_are_the_documented_contract():
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4]
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Exit codes", 1)[1].split("\n\n", 2)[1]
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["0", "1", "2", "3", "4"]


def test_an_unexpected_failure_is_one_line_and_exit_4(cli, tmp_path, tiny_config, tiny_cnn_factory_file,
                                                       write_config, image_tree):
    cfg = _broken_config(tmp_path, tiny_config, tiny_cnn_factory_file, write_config)
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", cfg, "-o", out)
    assert res.exit_code == ExitCode.RUN_FAILED, res
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and res.stderr.strip().splitlines()[-1] == lines[0], res.stderr
    assert lines[0].startswith("error: the run failed: ValueError: the model's forward is broken; second")
    log = out / "xaicli-error.log"
    assert f"(traceback in {log})" in lines[0]
    assert "Traceback (most recent call last)" in log.read_text() and "broken.py" in log.read_text()
    assert json.loads((out / "run.json").read_text())["status"] == "failed"

    res = cli("explain", image_tree, "-c", cfg, "-o", out, "--debug")
    assert res.exit_code == ExitCode.RUN_FAILED
    assert "Traceback (most recent call last)" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: the run failed")


def test_usage_errors_are_exit_2_and_unreadable_inputs_exit_1(cli, tmp_path, tiny_config, write_config,
                                                               image_tree):
    cfg = write_config(tmp_path, tiny_config)
    res = cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out", "-m", "gradcamm")
    assert res.exit_code == ExitCode.USAGE and res.stderr.startswith("error: ")
    assert len(res.stderr.strip().splitlines()) == 1
    (image_tree / "dog" / "broken.png").write_bytes(b"not an image")
    res = cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out")
    assert res.exit_code == ExitCode.INPUTS_UNREADABLE


def test_sweep_and_layers_map_errors_the_same_way(cli, tmp_path, tiny_config, tiny_cnn_factory_file,
                                                   write_config, image_tree):
    cfg = _broken_config(tmp_path, tiny_config, tiny_cnn_factory_file, write_config)
    res = cli("sweep", image_tree, "-c", cfg, "-o", tmp_path / "sweep", "--layers", "net.features.1.conv")
    assert res.exit_code == ExitCode.RUN_FAILED, res
    assert (tmp_path / "sweep" / "xaicli-error.log").is_file()
    res = cli("layers", "-c", write_config(tmp_path / "ok", tiny_config), "--json")
    assert res.exit_code == ExitCode.OK and json.loads(res.stdout)["layers"]
