"""`xaicli` end to end through Typer's CliRunner: commands, outputs, overrides, model sources, progress."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xaicli
from xaicli.methods import available_methods

TINY_CLASSES = ["cat", "dog", "bird", "fish"]  # as in conftest.tiny_config
ANSI = re.compile(r"\x1b\[")
REQUIRED_ROW_KEYS = {"image", "method", "layer", "target", "target_name", "rank", "score", "overlay", "map"}


def read_rows(outdir: Path) -> list[dict]:
    lines = (outdir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(ln) for ln in lines if ln.strip()]


def squash(text: str) -> str:
    """Help text without Rich's box drawing and line wrapping, for substring checks."""
    return " ".join(re.sub(r"[│╭╮╰╯─┃┏┓┗┛━┡┩╇┳┻┼├┤]", " ", text).split())


def load_tiny_model(factory_file: Path) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("_test_tiny_cnn_copy", factory_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()


def model_probs(model: torch.nn.Module, image: Path) -> np.ndarray:
    """Softmax of the tiny model on a 16x20 image, preprocessed by hand (no resize: it is already 16x20)."""
    x = torch.from_numpy(np.asarray(Image.open(image).convert("RGB"), dtype=np.float32) / 255.0)
    x = (x.permute(2, 0, 1)[None] - 0.5) / 0.25
    with torch.no_grad():
        return model(x).softmax(dim=1)[0].numpy()


# --- version, help, methods, layers ---------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(cli, flag):
    res = cli(flag)
    assert res.exit_code == 0
    assert res.stdout.strip() == f"xaicli {xaicli.__version__}"


@pytest.mark.parametrize("command, example", [
    ([], "xaicli explain sample_images -c configs/fashion_mnist.yaml -o out"),
    (["explain"], "xaicli explain sample_images -c configs/fashion_mnist.yaml -o out"),
    (["layers"], "xaicli layers -c configs/fashion_mnist.yaml"),
    (["methods"], "layers: [layer4] options: {alpha_norm: false}"),
])
def test_help_of_every_command_has_examples(cli, command, example):
    res = cli(*command, "--help")
    assert res.exit_code == 0, res
    text = squash(res.stdout)
    assert "Usage: xaicli" in text
    assert example in text
    if command == ["explain"]:
        for opt in ("--method", "--layer", "--topk", "--device", "--batch-size", "--overwrite", "--quiet",
                    "--json", "Exit codes"):
            assert opt in text


def test_no_arguments_prints_help(cli):
    res = cli()
    assert res.exit_code in (0, 2)
    assert "Usage: xaicli" in squash(res.stdout + res.stderr)


def test_methods_lists_every_registered_method(cli):
    expected = set(available_methods())
    assert {"gradcam", "gradcam_pp", "scorecam", "negative_gradcam"} <= expected
    res = cli("methods")
    assert res.exit_code == 0
    names = {line.split("│")[1].strip() for line in res.stdout.splitlines() if line.startswith("│")}
    assert expected <= names
    res = cli("methods", "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert set(data) == expected
    for name, info in data.items():
        assert info["summary"] and info["family"] in ("cam", "pixel"), name
        assert isinstance(info["options"], dict)
    assert data["gradcam_pp"]["options"]["alpha_norm"]["default"] is True
    assert data["gradcam"]["needs_layer"] is True


def test_layers_table_and_json(cli, tmp_path, write_config, tiny_config):
    cfg = write_config(tmp_path, tiny_config)
    res = cli("layers", "-c", cfg, "--json")
    assert res.exit_code == 0, res
    data = json.loads(res.stdout)
    assert data["input_shape"] == [3, 16, 20]
    shapes = {layer["name"]: layer["output_shape"] for layer in data["layers"]}
    assert shapes["features.0.conv"] == [6, 16, 20]
    assert shapes["features.1.conv"] == [8, 16, 20]
    assert shapes["pool"] == [8, 1, 1]
    assert shapes["fc"] == [4]
    assert data["default_layer"] in shapes and data["default_layer"].startswith("features")

    res = cli("layers", "-c", cfg)
    assert res.exit_code == 0
    rows = {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in
            (line.split("│")[1:-1] for line in res.stdout.splitlines() if line.startswith("│"))}
    assert rows["features.1.conv"] == ["Conv2d", "8x16x20"]
    assert rows["fc"] == ["Linear", "4"]
    assert rows[f"{data['default_layer']} *"][1] == "8x16x20"  # the default CAM layer is marked
    assert f"default CAM layer: {data['default_layer']}" in res.stdout


def test_layers_of_the_bundled_model_without_config(cli):
    res = cli("layers", "--json")
    assert res.exit_code == 0, res
    data = json.loads(res.stdout)
    assert data["input_shape"] == [1, 28, 28]
    assert data["default_layer"] in {layer["name"] for layer in data["layers"]}


# --- explain: outputs --------------------------------------------------------------------------------


def test_explain_writes_mirrored_overlays_maps_manifest_and_run_json(
        cli, tmp_path, write_config, tiny_config, tiny_cnn_factory_file, image_tree):
    cfg = write_config(tmp_path, tiny_config)
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", cfg, "-o", out)
    assert res.exit_code == 0, res
    rows = read_rows(out)
    assert len(rows) == 3 * 2  # 3 images x 1 method x 1 layer x top-2
    model = load_tiny_model(tiny_cnn_factory_file)
    for row in rows:
        assert REQUIRED_ROW_KEYS <= set(row)
        assert row["status"] == "ok" and row["method"] == "gradcam" and row["layer"] == "features.1.conv"
        rel = Path(row["image"]).relative_to(image_tree)  # the image's own folder keeps its extension
        assert row["rel"] == rel.as_posix()
        name = f"top{row['rank']}_{row['target_name']}"
        assert row["overlay"] == f"{rel.as_posix()}/gradcam/features.1.conv/{name}.png"
        assert row["map"] == f"{rel.as_posix()}/gradcam/features.1.conv/{name}.npy"
        assert row["target_name"] == TINY_CLASSES[row["target"]]
        assert row["label"] == rel.parent.name
        m = np.load(out / row["map"])
        assert m.dtype == np.float32 and m.shape == (16, 20)
        assert np.isfinite(m).all() and m.min() >= 0.0 and m.max() <= 1.0
        with Image.open(out / row["overlay"]) as im:
            assert im.size == (20, 16) and im.mode == "RGB"

    for image in sorted(image_tree.rglob("*.*")):
        mine = sorted((r for r in rows if r["image"] == str(image)), key=lambda r: r["rank"])
        assert [r["rank"] for r in mine] == [1, 2]
        if image.suffix == ".png":  # lossless: the hand preprocessing is exact
            probs = model_probs(model, image)
            order = np.argsort(-probs)
            assert [r["target"] for r in mine] == order[:2].tolist()
            for r in mine:
                assert r["score"] == pytest.approx(float(probs[r["target"]]), abs=2e-6)
        assert mine[0]["score"] >= mine[1]["score"]
        assert 0.0 < mine[1]["score"] <= mine[0]["score"] < 1.0

    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete"
    assert run["xaicli"] == xaicli.__version__ and run["torch"] == torch.__version__
    assert run["torchvision"] and run["python"]
    assert run["device"] == "cpu"
    assert run["classes"] == TINY_CLASSES
    assert run["config"]["model"]["source"] == "python"
    assert run["config"]["preprocess"]["size"] == [16, 20]
    assert run["config"]["methods"] == [{"name": "gradcam", "layers": ["features.1.conv"],
                                        "options": run["config"]["methods"][0]["options"]}]
    s = run["summary"]
    assert (s["images_total"], s["images_explained"], s["images_skipped"], s["images_failed"]) == (3, 3, 0, 0)
    assert s["rows_written"] == 6 and s["exit_code"] == 0
    assert {"load_model", "explain"} <= set(s["timings"])
    assert not list(out.rglob("*.tmp")), "atomic writes left temp files behind"


def test_rows_without_overlays_or_maps(cli, tmp_path, write_config, tiny_config, image_tree):
    tiny_config["output"] = {"overlays": False, "maps": False}
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == 0, res
    rows = read_rows(out)
    assert len(rows) == 6
    assert all(r["overlay"] is None and r["map"] is None and r["status"] == "ok" for r in rows)
    assert not [p for p in out.rglob("*") if p.is_file() and p.suffix in (".png", ".npy")]


def test_maps_only(cli, tmp_path, write_config, tiny_config, image_tree):
    tiny_config["output"] = {"overlays": False}
    out = tmp_path / "out"
    assert cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out).exit_code == 0
    rows = read_rows(out)
    assert all(r["overlay"] is None and (out / r["map"]).is_file() for r in rows)
    assert not [p for p in out.rglob("*.png") if p.is_file()]  # (the image folders are named 'a.png')


def test_single_file_and_several_inputs(cli, tmp_path, write_config, tiny_config, image_tree):
    cfg = write_config(tmp_path, tiny_config)
    out = tmp_path / "one"
    assert cli("explain", image_tree / "cat" / "a.png", "-c", cfg, "-o", out, "-k", "1").exit_code == 0
    assert [r["overlay"].split("/")[0] for r in read_rows(out)] == ["a.png"]
    other = tmp_path / "more"
    save_dir = other / "x"
    save_dir.mkdir(parents=True)
    (save_dir / "d.png").write_bytes((image_tree / "cat" / "a.png").read_bytes())
    out = tmp_path / "two"
    assert cli("explain", image_tree, other, "-c", cfg, "-o", out, "-k", "1").exit_code == 0
    prefixes = sorted(r["overlay"].split("/gradcam/")[0] for r in read_rows(out))
    assert prefixes == ["images/cat/a.png", "images/cat/b.jpg", "images/dog/c.png", "more/x/d.png"]


# --- explain: overrides, several methods and layers, explicit classes --------------------------------


def test_several_methods_and_layers_from_config(cli, tmp_path, write_config, tiny_config, image_tree):
    tiny_config["methods"] = [
        {"name": "gradcam", "layers": ["features.0.conv", "features.1.relu"]},
        {"name": "scorecam", "layers": ["features.1.conv"], "options": {"max_n": 4}},
        {"name": "saliency"},
    ]
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == 0, res
    rows = read_rows(out)
    combos = {(r["method"], r["layer"]) for r in rows}
    assert combos == {("gradcam", "features.0.conv"), ("gradcam", "features.1.relu"),
                      ("scorecam", "features.1.conv"), ("saliency", None)}
    assert len(rows) == 3 * 4 * 2
    assert (out / "cat/a.png/saliency/input").is_dir()
    # every method explains the same targets with the same scores
    for image in {r["image"] for r in rows}:
        per: dict[tuple, list] = {}
        for r in sorted((x for x in rows if x["image"] == image), key=lambda x: x["rank"]):
            per.setdefault((r["method"], r["layer"]), []).append((r["target"], r["score"]))
        assert len(per) == 4 and len({tuple(v) for v in per.values()}) == 1


def test_command_line_overrides_config(cli, tmp_path, write_config, tiny_config, image_tree):
    tiny_config["methods"] = [{"name": "gradcam", "layers": ["features.0.conv"]},
                              {"name": "scorecam", "options": {"max_n": 2}}]
    tiny_config["run"].update(device="cuda:7", batch_size=64)  # would fail if --device were ignored
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out,
              "--method", "gradcam", "-m", "gradcam_pp", "--layer", "features.1.conv", "-l", "features.1.bn",
              "--topk", "3", "--batch-size", "1", "--device", "cpu")
    assert res.exit_code == 0, res
    rows = read_rows(out)
    assert {(r["method"], r["layer"]) for r in rows} == {
        (m, layer) for m in ("gradcam", "gradcam_pp") for layer in ("features.1.conv", "features.1.bn")}
    assert sorted({r["rank"] for r in rows}) == [1, 2, 3]
    assert len(rows) == 3 * 2 * 2 * 3
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["run"]["batch_size"] == 1 and run["config"]["run"]["device"] == "cpu"
    assert run["config"]["targets"] == {"topk": 3, "classes": None, "true_class": False, "labels": None}
    assert [m["name"] for m in run["config"]["methods"]] == ["gradcam", "gradcam_pp"]


def test_method_override_keeps_config_layers_and_options(cli, tmp_path, write_config, tiny_config,
                                                         image_tree):
    tiny_config["methods"] = [{"name": "scorecam", "layers": ["features.0.conv"], "options": {"max_n": 2}}]
    out = tmp_path / "out"
    res = cli("explain", image_tree / "cat", "-c", write_config(tmp_path, tiny_config), "-o", out,
              "-m", "scorecam", "-m", "gradcam", "-k", "1")
    assert res.exit_code == 0, res
    run = json.loads((out / "run.json").read_text())
    methods = {m["name"]: m for m in run["config"]["methods"]}
    assert methods["scorecam"]["layers"] == ["features.0.conv"]
    assert methods["scorecam"]["options"]["max_n"] == 2
    assert methods["gradcam"]["layers"] == [run_default_layer(cli, tmp_path, write_config, tiny_config)]


def run_default_layer(cli, tmp_path, write_config, tiny_config) -> str:
    res = cli("layers", "-c", write_config(tmp_path, tiny_config, "layers.yaml"), "--json")
    return json.loads(res.stdout)["default_layer"]


def test_explicit_target_classes(cli, tmp_path, write_config, tiny_config, tiny_cnn_factory_file, image_tree):
    tiny_config["targets"] = {"classes": [1, "bird"]}
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == 0, res
    rows = read_rows(out)
    assert len(rows) == 3 * 2
    model = load_tiny_model(tiny_cnn_factory_file)
    for r in rows:
        assert r["rank"] is None and r["target"] in (1, 2)
        assert r["overlay"].endswith({1: "class1_dog.png", 2: "class2_bird.png"}[r["target"]])
        if r["image"].endswith(".png"):
            expected = float(model_probs(model, Path(r["image"]))[r["target"]])
            assert r["score"] == pytest.approx(expected, abs=2e-6)


def test_topk_larger_than_classes_is_capped(cli, tmp_path, write_config, tiny_config, image_tree):
    out = tmp_path / "out"
    res = cli("explain", image_tree / "dog", "-c", write_config(tmp_path, tiny_config), "-o", out, "-k", "9")
    assert res.exit_code == 0, res
    rows = read_rows(out)
    assert sorted(r["rank"] for r in rows) == [1, 2, 3, 4]
    assert sorted(r["target"] for r in rows) == [0, 1, 2, 3]
    assert sum(r["score"] for r in rows) == pytest.approx(1.0, abs=1e-5)


# --- progress and summaries ----------------------------------------------------------------------------


def test_plain_progress_lines_when_not_a_tty(cli, tmp_path, write_config, tiny_config, image_tree):
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", tmp_path / "out")
    assert res.exit_code == 0
    assert not ANSI.search(res.stdout) and not ANSI.search(res.stderr)
    lines = res.stderr.splitlines()
    assert lines[0] == "explaining: 3 image(s)"
    assert any(re.fullmatch(r"\s*3/3 images\s+[\d.]+ img/s\s+eta \d+s", ln) for ln in lines)
    assert lines[-1].startswith("done: 3 explained, 0 skipped (already done), 0 failed; 6 explanation(s)")
    assert res.stdout == ""


def test_quiet_prints_nothing_on_success(cli, tmp_path, write_config, tiny_config, image_tree):
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", tmp_path / "out", "-q")
    assert res.exit_code == 0
    assert res.stdout == "" and res.stderr == ""


def test_quiet_still_reports_failures(cli, tmp_path, write_config, tiny_config, image_tree):
    (image_tree / "cat" / "empty.png").write_bytes(b"")
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", tmp_path / "out", "-q")
    assert res.exit_code == 1
    assert res.stdout == ""
    assert res.stderr.strip() == f"failed: {image_tree / 'cat' / 'empty.png'}: empty file (0 bytes)"


def test_json_summary(cli, tmp_path, write_config, tiny_config, image_tree):
    bad = image_tree / "dog" / "bad.jpg"
    bad.write_bytes(b"\x00garbage" * 10)
    cfg = write_config(tmp_path, tiny_config)
    res = cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out", "--json")
    assert res.exit_code == 1
    summary = json.loads(res.stdout)
    assert summary["images_total"] == 4 and summary["images_explained"] == 3
    assert summary["images_failed"] == 1 and summary["images_skipped"] == 0
    assert summary["rows_written"] == 6 and summary["exit_code"] == 1 and summary["device"] == "cpu"
    assert summary["failures"] == [{"image": str(bad), "error": summary["failures"][0]["error"]}]
    assert "not an image" in summary["failures"][0]["error"]
    assert res.stderr == ""  # no progress lines mixed into a JSON run


def test_progress_factory_picks_by_terminal(monkeypatch):
    from xaicli.cli import progress

    assert isinstance(progress.make_progress(True), progress.QuietProgress)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert type(progress.make_progress(False)) is progress.PlainProgress
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert isinstance(progress.make_progress(False), progress.RichProgress)


# --- model sources ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_state(tmp_path_factory) -> tuple[dict, Path]:
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None, num_classes=3).state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "resnet18_3.pt"
    torch.save(state, path)
    return state, path


def _tv_config(checkpoint: Path, **model) -> dict:
    return {"model": {"source": "torchvision", "name": "resnet18", "checkpoint": str(checkpoint),
                      "classes": ["a", "b", "c"], **model},
            "preprocess": {"size": [32, 32]}, "targets": {"topk": 2}, "run": {"device": "cpu", "workers": 1}}


@pytest.mark.parametrize("wrap", ["plain", "state_dict+module_prefix"])
def test_torchvision_with_checkpoint(cli, tmp_path, write_config, image_tree, resnet18_state, wrap):
    """The head size (3) comes from the checkpoint; {"state_dict": ...} and "module." prefixes are undone."""
    state, plain_path = resnet18_state
    ckpt = plain_path
    if wrap != "plain":
        ckpt = tmp_path / "wrapped.pt"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, ckpt)
    out = tmp_path / "out"
    res = cli("explain", image_tree / "cat", "-c", write_config(tmp_path, _tv_config(ckpt)), "-o", out)
    assert res.exit_code == 0, res
    rows = read_rows(out)
    assert len(rows) == 2 * 2
    assert {r["target_name"] for r in rows} <= {"a", "b", "c"}
    assert all(np.load(out / r["map"]).shape == (32, 32) for r in rows)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["preprocess"]["mode"] == "RGB" and run["config"]["methods"][0]["layers"]


@pytest.mark.parametrize("model, message", [
    ({"name": "resnet34"}, "key(s) missing from the checkpoint"),
    ({"num_classes": 5}, "fc.weight is [3, 512] in the checkpoint but [5, 512] in the model"),
])
def test_torchvision_checkpoint_that_does_not_fit(cli, tmp_path, write_config, image_tree, resnet18_state,
                                                 model, message):
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, _tv_config(resnet18_state[1], **model)),
              "-o", out)
    assert res.exit_code == 2
    assert res.stderr.startswith("error: checkpoint ") and "does not fit the model" in res.stderr
    assert message in res.stderr and res.stderr.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("content, message", [
    (b"definitely not a checkpoint" * 4, "cannot read checkpoint"),
    (None, "does not hold a state_dict"),
])
def test_unreadable_checkpoint(cli, tmp_path, write_config, image_tree, content, message):
    ckpt = tmp_path / "bad.pt"
    if content is None:
        torch.save([1, 2, 3], ckpt)
    else:
        ckpt.write_bytes(content)
    res = cli("explain", image_tree, "-c", write_config(tmp_path, _tv_config(ckpt)), "-o", tmp_path / "out")
    assert res.exit_code == 2
    assert message in res.stderr and res.stderr.count("\n") == 1 and not ANSI.search(res.stderr)


def test_python_factory_from_file_relative_to_config(cli, tmp_path, write_config, tiny_config, image_tree,
                                                      tiny_cnn_factory_file):
    tiny_config["model"]["factory"] = "../tiny_cnn.py:build"  # relative to the config's folder
    cfg = write_config(tmp_path / "configs", tiny_config)
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", cfg, "-o", out, "-k", "1")
    assert res.exit_code == 0, res
    assert len(read_rows(out)) == 3


def test_python_factory_from_package_module(cli, tmp_path, write_config, tiny_config, image_tree,
                                             tiny_cnn_factory_file, monkeypatch):
    pkg = tmp_path / "site" / "xaicli_test_zoo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(tiny_cnn_factory_file.read_text())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in ("xaicli_test_zoo", "xaicli_test_zoo.nets"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    tiny_config["model"]["factory"] = "xaicli_test_zoo.nets:build"
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out, "-k", "1")
    assert res.exit_code == 0, res
    assert len(read_rows(out)) == 3
    assert sys.modules["xaicli_test_zoo.nets"].BUILT, "the factory from the package was used"
    sys.modules.pop("xaicli_test_zoo.nets", None)
    sys.modules.pop("xaicli_test_zoo", None)


def _torchscript_available() -> bool:
    try:
        from xaicli.models.torchscript import load_torchscript  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _torchscript_available(), reason="xaicli.models.torchscript is not available yet")
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated in recent torch
def test_traced_torchscript_model_with_gradcam(cli, tmp_path, write_config, tiny_config, image_tree,
                                               tiny_cnn_factory_file):
    model = load_tiny_model(tiny_cnn_factory_file)
    ts = torch.jit.trace(model, torch.rand(1, 3, 16, 20))
    path = tmp_path / "tiny.ts.pt"
    ts.save(str(path))
    tiny_config["model"] = {"source": "torchscript", "path": str(path), "classes": TINY_CLASSES}
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == 0, res
    rows = read_rows(out)
    assert len(rows) == 3 * 2 and {r["layer"] for r in rows} == {"features.1.conv"}
    for r in rows:
        m = np.load(out / r["map"])
        assert m.shape == (16, 20) and m.max() <= 1.0 and m.min() >= 0.0
        if r["image"].endswith(".png"):  # same weights, same scores as the eager model
            expected = float(model_probs(model, Path(r["image"]))[r["target"]])
            assert r["score"] == pytest.approx(expected, abs=2e-6)
