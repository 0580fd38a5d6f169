"""No silent surprises (issue 10): what a new user tries gets the behaviour they expect - an error where
the request cannot be met, a one-line notice where something is ignored or capped, JSON on stdout for
every exit code with ``--json``, and the real model's name in run.json and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import save_random_image

from xaicli.errors import ExitCode


def rows_of(outdir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (outdir / "manifest.jsonl").read_text().splitlines() if ln.strip()]


@pytest.mark.parametrize("content", ["nothing", "not_images"])
def test_no_images_is_an_error_not_a_green_run(cli, tmp_path, write_config, tiny_config, content):
    folder = tmp_path / "empty"
    folder.mkdir()
    if content == "not_images":
        (folder / "notes.txt").write_text("hello")
    out = tmp_path / "out"
    res = cli("explain", folder, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == ExitCode.USAGE, res
    assert res.stderr.strip().startswith(f"error: no images found under {folder} (image suffixes: ")
    assert not out.exists()


@pytest.mark.parametrize("case", ["config", "option", "busy", "failed"])
def test_json_prints_an_object_for_every_exit_code(cli, tmp_path, write_config, tiny_config, image_tree,
                                                   case):
    import fcntl

    out = tmp_path / "out"
    args: list = ["explain", image_tree, "-o", out, "--json"]
    if case == "config":
        tiny_config["run"]["batch_size"] = 0
    elif case == "option":
        args += ["--topk", "0"]
    elif case == "failed":
        (tmp_path / "raises.py").write_text(
            "import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
            "        if x.shape[0] > 1:\n            raise ValueError('boom')\n"
            "        return x.mean(dim=(2, 3)) @ torch.ones(3, 4)\n"
            "def build():\n    return M()\n")
        tiny_config["model"] = {"source": "python", "factory": "raises.py:build"}
        tiny_config["methods"] = [{"name": "saliency"}]
    args += ["-c", write_config(tmp_path, tiny_config)]
    held = None
    if case == "busy":
        out.mkdir()
        held = open(out / ".xaicli.lock", "w")
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        res = cli(*args)
    finally:
        if held is not None:
            held.close()
    expected = ExitCode.RUN_FAILED if case == "failed" else ExitCode.USAGE
    assert res.exit_code == expected, res
    data = json.loads(res.stdout)
    assert data["exit_code"] == expected and data["error"]
    assert data["error"] in res.stderr  # the same line on stderr, for people


def _run_json_model(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def test_run_json_and_report_name_the_model_that_ran(cli, tmp_path, write_config, tiny_config, image_tree,
                                                      tiny_cnn_factory_file):
    out = tmp_path / "out"
    assert cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out).exit_code == 0
    run = _run_json_model(out)
    assert run["config"]["model"]["name"] is None
    assert run["model"]["source"] == "python" and str(tiny_cnn_factory_file) in run["model"]["description"]
    assert "fashion_mnist_cnn" not in json.dumps(run)
    from xaicli.outputs.report_data import collect_report_data

    assert "tiny_cnn.py:build" in collect_report_data(out)["info"]["model"]

    import importlib.util

    spec = importlib.util.spec_from_file_location("_tiny_for_ts", tiny_cnn_factory_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ts = tmp_path / "tiny.ts.pt"
    torch.jit.trace(module.build(), torch.rand(1, 3, 16, 20)).save(str(ts))
    classes = tiny_config["model"]["classes"]
    tiny_config["model"] = {"source": "torchscript", "path": str(ts), "classes": classes}
    out = tmp_path / "ts_out"
    assert cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out).exit_code == 0
    assert "tiny.ts.pt" in collect_report_data(out)["info"]["model"]
    assert "fashion_mnist_cnn" not in (out / "run.json").read_text()


def test_ignored_and_capped_requests_get_a_notice(cli, tmp_path, write_config, tiny_config, image_tree):
    tiny_config["methods"] = [{"name": "gradcam"}, {"name": "saliency"}]
    tiny_config["run"]["precision"] = "bf16"
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out,
              "-l", "features.1.conv", "-k", "9")
    assert res.exit_code == 0, res
    notices = [ln for ln in res.stderr.splitlines() if ln.startswith("notice: ")]
    assert any("saliency" in n and "layer" in n and "ignored" in n for n in notices), res.stderr
    assert any("top-9" in n and "4 classes" in n for n in notices), res.stderr
    assert any("bf16" in n and "CUDA" in n for n in notices), res.stderr
    assert {r["layer"] for r in rows_of(out)} == {"features.1.conv", None}
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out, "-l",
              "features.1.conv", "-k", "9", "-q")
    assert res.stderr == ""  # --quiet silences notices too


def test_gif_files_are_found_in_folders(cli, tmp_path, write_config, tiny_config, image_tree):
    save_random_image(image_tree / "dog" / "anim.gif", seed=4)
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out, "-k", "1")
    assert res.exit_code == 0, res
    assert "dog/anim.gif" in {r["rel"] for r in rows_of(out)}


def test_scalars_are_read_as_one_item_lists(tmp_path):
    from xaicli.config import config_from_dict

    (tmp_path / "names.txt").write_text("a\nb\n")
    cfg = config_from_dict({"model": {"source": "python", "factory": "x.py:build", "classes": "names.txt"},
                            "preprocess": {"size": 224, "mean": 0.5, "std": 0.25},
                            "methods": [{"name": "gradcam", "layers": "features.1.bn"}],
                            "targets": {"classes": 3}}, base_dir=tmp_path)
    assert cfg.preprocess.size == [224] and cfg.preprocess.mean == [0.5]
    assert cfg.methods[0].layers == ["features.1.bn"] and cfg.targets.classes == [3]
    assert cfg.model.classes == "names.txt"  # a string here is a file of names, not a one-item list


def test_changed_overlay_settings_on_a_resume_get_a_notice(cli, tmp_path, write_config, tiny_config,
                                                           image_tree):
    """Overlay settings do not change a map (not in the fingerprint), but files already written keep
    the old ones: said, not silent."""
    out = tmp_path / "out"
    assert cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out).exit_code == 0
    tiny_config["output"] = {"colormap": "viridis"}
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == 0, res
    notices = [ln for ln in res.stderr.splitlines() if ln.startswith("notice: ")]
    assert len(notices) == 1 and "output.colormap 'jet' -> 'viridis'" in notices[0]
    assert "--overwrite" in notices[0]
