"""Config and usage errors: each gives exit code 2 and one clear line naming the key, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from xaicli.config import Config, config_from_dict, load_config
from xaicli.errors import ConfigError, UsageError


def set_key(cfg: dict, dotted: str, value) -> None:
    """``set_key(cfg, "run.batch_size", 3)``; numeric parts index lists (``methods.0.name``)."""
    *parents, last = dotted.split(".")
    node = cfg
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def assert_usage_error(res, *needles: str, outdir: Path | None = None) -> str:
    """Exit 2, exactly one 'error: ...' line on stderr containing every needle, nothing on stdout."""
    assert res.exit_code == 2, res
    assert "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert res.stdout == ""
    if outdir is not None:
        assert not outdir.exists(), "nothing may be written on a usage error"
    return lines[0]


CONFIG_ERRORS = [
    # (dotted key to set or None, value / top-level dict patch, expected substrings)
    ("modle", {"source": "builtin"}, ["'modle'", "unknown key", "did you mean: 'model'"]),
    ("preprocess.sise", [16, 20], ["'preprocess.sise'", "unknown key", "'size'"]),
    ("run.batch_size", "x", ["'run.batch_size'", "expected int"]),
    ("run.batch_size", True, ["'run.batch_size'", "expected int"]),
    ("run.batch_size", 0, ["'run.batch_size'", "must be >= 1"]),
    ("output.alpha", 1.5, ["'output.alpha'", "between 0 and 1"]),
    ("output.colormap", "jett", ["'output.colormap'", "unknown colormap 'jett'", "'jet'"]),
    ("preprocess.mode", "RGBA", ["'preprocess.mode'", "'L'", "'RGB'"]),
    ("preprocess.size", [0, 16], ["'preprocess.size'"]),
    ("preprocess.std", [0.0], ["'preprocess.std'", "> 0"]),
    ("run.precision", "fp8", ["'run.precision'", "'fp32'"]),
    ("run.device", "tpu", ["'run.device'", "cuda"]),
    ("model.source", "onnx", ["'model.source'", "'torchvision'", "'torchscript'", "'python'"]),
    ("methods", [], ["'methods'", "at least one"]),
    ("methods", {"name": "gradcam"}, ["'methods'", "expected list"]),
    ("methods.0.name", "gradcm", ["'methods[0].name'", "unknown method 'gradcm'", "did you mean: 'gradcam'"]),
    ("methods.0.layers", {"features.1.conv": 1}, ["'methods[0].layers'", "expected list of str"]),
    ("methods.0.layers", ["features.1.cnv"],
     ["'methods[0].layers[0]'", "unknown layer 'features.1.cnv'", "'features.1.conv'"]),
    ("methods.0.layers", ["fc"], ["'methods[0].layers[0]'", "not a feature map"]),
    ("methods.0.options", {"max_n": 3}, ["'methods[0].options.max_n'", "unknown option", "'upsample'"]),
    ("methods.0.options", {"upsample": "cubic"}, ["'methods[0].options.upsample'", "'bicubic'"]),
    ("targets", {"classes": ["zebra"]}, ["'targets.classes[0]'", "unknown class 'zebra'", "'cat'", "'fish'"]),
    ("targets", {"classes": [7]}, ["'targets.classes[0]'", "class index 7 out of range 0..3"]),
    ("targets", {"classes": []}, ["'targets.classes'", "at least one"]),
    ("targets", {"topk": 2, "classes": [1]}, ["'targets'", "either 'topk' or 'classes', not both"]),
    ("targets.topk", 0, ["'targets.topk'", ">= 1"]),
    ("model.classes", ["a", "b"], ["'model.classes'", "2 class names for a model with 4 outputs"]),
    ("model.classes", "names.txt", ["'model.classes'", "class-name file not found"]),
    ("model.checkpoint", "missing.pt", ["'model.checkpoint'", "file not found", "missing.pt"]),
    ("model.factory", "no_colon_here", ["'model.factory'", "'package.module:function' or 'file.py:"]),
    ("model.factory", "missing.py:build", ["'model.factory'", "file not found", "missing.py"]),
    ("model.factory", "FACTORY:no_such_function", ["'model.factory'", "has no callable 'no_such_function'"]),
    ("model.factory", "xaicli_no_such_pkg.models:build", ["'model.factory'", "cannot import module"]),
    ("preprocess.mode", "L", ["fails on a 1x16x20 input", "preprocess.mode"]),
]


@pytest.mark.parametrize("key, value, needles", CONFIG_ERRORS,
                         ids=[f"{c[0]}={c[1]!r}"[:60] for c in CONFIG_ERRORS])
def test_config_error_exits_2_with_one_line(cli, tmp_path, write_config, tiny_config, tiny_cnn_factory_file,
                                            image_tree, key, value, needles):
    if value == "FACTORY:no_such_function":
        value = f"{tiny_cnn_factory_file}:no_such_function"
    set_key(tiny_config, key, value)
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert_usage_error(res, *needles, outdir=out)


@pytest.mark.parametrize("source, needles", [
    ("def build(:\n", ["'model.factory'", "SyntaxError"]),
    ("def build():\n    raise ValueError('no weights here')\n", ["factory", "ValueError: no weights here"]),
    ("def build():\n    return 42\n", ["returned int, expected a torch.nn.Module"]),
    ("import torch\ndef build():\n    return torch.nn.Linear(3, 2)\n", ["model fails on a 3x16x20 input"]),
    ("raise RuntimeError('import-time failure')\n", ["'model.factory'", "RuntimeError: import-time failure"]),
])
def test_broken_factory_file(cli, tmp_path, write_config, tiny_config, image_tree, source, needles):
    (tmp_path / "broken.py").write_text(source)
    tiny_config["model"]["factory"] = "broken.py:build"
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert_usage_error(res, *needles, outdir=out)


def test_missing_torchscript_path(cli, tmp_path, write_config, image_tree):
    cfg = write_config(tmp_path, {"model": {"source": "torchscript", "path": "nope.pt"}})
    assert_usage_error(cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out"),
                       "'model.path'", "file not found", "nope.pt", outdir=tmp_path / "out")


def test_required_model_key(cli, tmp_path, write_config, image_tree):
    cfg = write_config(tmp_path, {"model": {"source": "python"}})
    assert_usage_error(cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out"),
                       "'model.factory'", "required when model.source is 'python'")


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_unreadable_torchscript_file(cli, tmp_path, write_config, image_tree):
    (tmp_path / "model.pt").write_bytes(b"not a zip archive" * 8)
    cfg = write_config(tmp_path, {"model": {"source": "torchscript", "path": "model.pt"}})
    res = cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out")
    assert res.exit_code == 2 and "Traceback" not in res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "model.pt" in errors[0]


def test_unknown_torchvision_architecture(cli, tmp_path, write_config, image_tree):
    cfg = write_config(tmp_path, {"model": {"source": "torchvision", "name": "resnet181"}})
    assert_usage_error(cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out"),
                       "'model.name'", "unknown torchvision architecture 'resnet181'", "'resnet18'")


def test_missing_config_file(cli, tmp_path, image_tree):
    assert_usage_error(cli("explain", image_tree, "-c", tmp_path / "nope.yaml", "-o", tmp_path / "out"),
                       "config file not found", "nope.yaml", outdir=tmp_path / "out")


@pytest.mark.parametrize("text, needles", [
    ("model:\n  source: [python\n  factory: x\n", ["not valid YAML", "line 3, column"]),
    ("model: {source: python\n", ["not valid YAML"]),
    ("\tmodel: 1\n", ["not valid YAML"]),
    ("- model\n- run\n", ["'top level'", "expected a mapping"]),
    ("model: [1, 2]\n", ["'model'", "expected a mapping"]),
])
def test_invalid_yaml(cli, tmp_path, image_tree, text, needles):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert_usage_error(cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out"), *needles,
                       outdir=tmp_path / "out")


def test_config_not_utf8(cli, tmp_path, image_tree):
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes("model: {source: builtin}  # caf\xe9\n".encode("latin-1"))
    assert_usage_error(cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out"), "not UTF-8")


def test_nonexistent_input(cli, tmp_path, write_config, tiny_config, image_tree):
    cfg = write_config(tmp_path, tiny_config)
    missing = tmp_path / "no_such_folder"
    assert_usage_error(cli("explain", image_tree, missing, "-c", cfg, "-o", tmp_path / "out"),
                       "input not found", str(missing), outdir=tmp_path / "out")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("how", ["config", "flag"])
def test_cuda_without_cuda(cli, tmp_path, write_config, tiny_config, image_tree, how):
    if how == "config":
        tiny_config["run"]["device"] = "cuda"
        args = ()
    else:
        args = ("--device", "cuda:0")
    cfg = write_config(tmp_path, tiny_config)
    assert_usage_error(cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out", *args),
                       "'run.device'", "CUDA is not available", outdir=tmp_path / "out")


def test_layers_command_reports_config_errors(cli, tmp_path, write_config, tiny_config):
    tiny_config["modle"] = {}
    assert_usage_error(cli("layers", "-c", write_config(tmp_path, tiny_config)), "'modle'", "'model'")


@pytest.mark.parametrize("args", [
    ["--topk", "0"], ["--batch-size", "0"], ["--bogus-flag"],
])
def test_bad_command_line_options(cli, tmp_path, write_config, tiny_config, image_tree, args):
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", tmp_path / "out", *args)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_missing_outdir_and_inputs(cli, tmp_path):
    assert cli("explain", tmp_path).exit_code == 2
    assert cli("explain", "-o", tmp_path / "out").exit_code == 2


# --- the config loader as a library ---------------------------------------------------------------------


def test_defaults_are_the_bundled_demo():
    cfg = load_config(None)
    assert cfg == config_from_dict({}) == config_from_dict(None)
    assert cfg.model.source == "builtin" and cfg.model.name == "fashion_mnist_cnn"
    assert [m.name for m in cfg.methods] == ["gradcam"]
    assert cfg.output.overlays and cfg.output.maps and cfg.output.colormap == "jet"
    assert cfg.run.device == "auto" and cfg.run.batch_size == 64 and cfg.run.precision == "fp32"
    assert isinstance(Config().to_dict(), dict) and "base_dir" not in Config().to_dict()


def test_bundled_config_is_valid():
    path = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist.yaml"
    cfg = load_config(path)
    assert cfg.methods[0].name == "gradcam" and cfg.targets.topk == 3


def test_paths_are_relative_to_the_config_file(tmp_path, write_config):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.pt").write_bytes(b"x")
    cfg = load_config(write_config(tmp_path / "sub", {"model": {"source": "builtin", "checkpoint": "w.pt"}}))
    assert cfg.resolve_path(cfg.model.checkpoint) == tmp_path / "sub" / "w.pt"


def test_int_accepted_where_float_expected():
    cfg = config_from_dict({"output": {"alpha": 1}, "preprocess": {"mean": [0, 1, 0], "std": [1, 1, 1]}})
    assert cfg.output.alpha == 1.0 and isinstance(cfg.output.alpha, float)
    assert cfg.preprocess.mean == [0.0, 1.0, 0.0]


def test_config_error_carries_the_key():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"run": {"batch_size": "x"}})
    assert info.value.key == "run.batch_size"
    assert isinstance(info.value, UsageError)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_load_and_plan(path, tmp_path):
    """Every config in configs/ validates, and its methods and layers exist in its model."""
    from xaicli.config import load_config
    from xaicli.engine.plan import plan_methods
    from xaicli.models.loader import load_model

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    checkpoint = data["model"].get("checkpoint")
    if checkpoint and not (path.parent / checkpoint).is_file():
        # fashion_mnist_changed.yaml: its checkpoint is what `python -m xaicli.demo.reinit` writes
        from xaicli.demo.reinit import reinitialised_state

        torch.save(reinitialised_state(data["model"]["name"], ["features.2"]), tmp_path / "changed.pt")
        data["model"]["checkpoint"] = str(tmp_path / "changed.pt")
        path = tmp_path / path.name
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
    cfg = load_config(path)
    if cfg.model.source == "timm":
        pytest.importorskip("timm")
    planned = plan_methods(cfg, load_model(cfg))
    assert [p.name for p in planned] == [m.name for m in cfg.methods]


def test_all_methods_config_runs_every_registered_method_that_fits_its_model():
    """configs/all_methods.yaml lists every registered method whose capabilities fit its model (the
    bundled CNN): all of them except the attention family, which needs a transformer's self-attention."""
    from xaicli.config import load_config
    from xaicli.methods import available_methods
    from xaicli.models.loader import load_model
    from xaicli.models.vit import attention_modules

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "all_methods.yaml")
    model = load_model(cfg).model
    has_attention = bool(attention_modules(model))
    fitting = [name for name, cls in available_methods().items() if has_attention or not cls.needs_attention]
    assert sorted(m.name for m in cfg.methods) == sorted(fitting)
    assert set(available_methods()) - set(fitting)  # the attention methods are left out on this CNN
    assert cfg.figures.compare  # the method-comparison figure shows them side by side
