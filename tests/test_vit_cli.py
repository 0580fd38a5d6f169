"""Vision transformers through the CLI: layers with layouts, sensible defaults, the attention methods in
``explain``, the errors a user meets (exit 2, one line naming the key)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

VIT_SOURCE = '''
import torch
from torch import nn
from torchvision.models import VisionTransformer


def build():
    torch.manual_seed(0)
    model = VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
                              mlp_dim=32, num_classes=4)
    with torch.no_grad():
        nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.eval()
'''


@pytest.fixture
def vit_config(tmp_path: Path, tiny_config: dict) -> dict:
    (tmp_path / "tiny_vit_model.py").write_text(VIT_SOURCE)
    tiny_config["model"] = {"source": "python", "factory": "tiny_vit_model.py:build",
                            "classes": ["cat", "dog", "bird", "fish"]}
    tiny_config["preprocess"] = {"size": [16, 16], "mode": "RGB", "mean": [0.5], "std": [0.25]}
    tiny_config["methods"] = [{"name": "gradcam"}, {"name": "attention_rollout"},
                              {"name": "transformer_attribution"}, {"name": "legrad"}]
    tiny_config["targets"] = {"topk": 2}
    return tiny_config


def test_layers_show_token_layouts_and_the_vit_default(cli, tmp_path, write_config, vit_config):
    cfg = write_config(tmp_path, vit_config)
    res = cli("layers", "-c", cfg, "--json")
    assert res.exit_code == 0, res
    data = json.loads(res.stdout)
    assert data["default_layer"] == "encoder.layers.encoder_layer_1.ln_1"
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert layers["encoder.layers.encoder_layer_1.ln_1"]["layout"] == {"kind": "tokens", "grid": [4, 4],
                                                                      "prefix": 1}
    assert layers["encoder.layers.encoder_layer_1.ln_1"]["map_shape"] == [16, 4, 4]
    res = cli("layers", "-c", cfg)
    assert res.exit_code == 0
    row = next(line for line in res.stdout.splitlines() if "encoder.layers.encoder_layer_1.ln_1 *" in line)
    assert "tokens 1+4x4" in row and "16x4x4" in row


def test_explain_a_vit_with_cams_and_attention_methods(cli, tmp_path, write_config, vit_config, image_tree):
    cfg = write_config(tmp_path, vit_config)
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", cfg, "-o", out, "-q")
    assert res.exit_code == 0, res
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {(r["method"], r["layer"]) for r in rows} == {
        ("gradcam", "encoder.layers.encoder_layer_1.ln_1"), ("attention_rollout", None),
        ("transformer_attribution", None), ("legrad", None)}
    assert len(rows) == 3 * 4 * 2  # images x methods x top-2
    for r in rows:
        m = np.load(out / r["map"])
        assert m.shape == (16, 16) and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
        assert np.ptp(m) > 0, (r["method"], r["image"])  # a map, not a blank


@pytest.mark.usefixtures("torch_single_thread")
def test_evaluate_a_vit_token_layer_cam_and_attention_methods(cli, tmp_path, write_config, vit_config,
                                                              image_tree):
    """`xaicli evaluate` on a ViT: Grad-CAM at the default token layer and two attention methods, scored
    by metrics that only need the maps (deletion, insertion, sparseness) and by those that re-explain
    (MPRT on the randomised ViT, its attention projections included; random logit; max-sensitivity).
    Every (map, metric) gets a finite row, and the deletion rows equal deletion recomputed from the
    written .npy maps and the images (evaluate_maps)."""
    from xaicli.config import load_config
    from xaicli.engine import Explainer
    from xaicli.metrics import evaluate_maps

    fast = {"deletion": {"steps": 8}, "insertion": {"steps": 8}, "max_sensitivity": {"samples": 2}}
    vit_config["methods"] = [{"name": "gradcam"}, {"name": "attention_rollout"},
                             {"name": "transformer_attribution"}]
    vit_config["evaluate"] = {"options": fast}
    cfg = write_config(tmp_path, vit_config)
    out = tmp_path / "out"
    metrics = "deletion,insertion,sparseness,mprt,random_logit,max_sensitivity"
    res = cli("evaluate", image_tree, "-c", cfg, "-o", out, "--metrics", metrics, "-q")
    assert res.exit_code == 0, res
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (out / "evaluation.jsonl").read_text().splitlines()]
    layer = "encoder.layers.encoder_layer_1.ln_1"
    keys = {("gradcam", layer), ("attention_rollout", None), ("transformer_attribution", None)}
    assert {(r["method"], r["layer"]) for r in manifest} == keys and len(manifest) == 3 * 3 * 2
    for metric in metrics.split(","):
        mine = [r for r in rows if r["metric"] == metric]
        assert {(r["method"], r["layer"]) for r in mine} == keys, metric
        assert all(r["value"] is not None and np.isfinite(r["value"]) for r in mine), metric
    stages = {r["stage"] for r in rows if r["metric"] == "mprt"}
    assert {"heads.head", "encoder.layers.encoder_layer_1.self_attention", "conv_proj"} <= stages

    explainer = Explainer(load_config(cfg))
    deletion = {(r["image"], r["method"], r["slot"]): r["value"] for r in rows if r["metric"] == "deletion"}
    for image in sorted({r["image"] for r in manifest}):
        x = explainer.normalise(explainer.pre.load(image)[None])
        for method, _ in sorted(keys, key=str):
            mine = sorted((r for r in manifest if r["image"] == image and r["method"] == method),
                          key=lambda r: r["slot"])
            maps = torch.from_numpy(np.stack([np.load(out / r["map"]) for r in mine]))[None]
            targets = torch.tensor([[r["target"] for r in mine]])
            got = evaluate_maps(explainer.loaded.model, x, maps, targets, ["deletion"], options=fast)
            for k, r in enumerate(mine):
                assert deletion[(image, method, r["slot"])] == pytest.approx(
                    float(got["deletion"].values[0, k]), abs=1e-5)


def test_attention_method_on_a_cnn_is_a_config_error(cli, tmp_path, write_config, tiny_config, image_tree):
    tiny_config["methods"] = [{"name": "attention_rollout"}]
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", tmp_path / "out")
    assert res.exit_code == 2, res
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "'methods[0].name'" in lines[0] and "no self-attention modules" in lines[0]


def test_an_impossible_layer_layout_is_a_config_error(cli, tmp_path, write_config, vit_config, image_tree):
    vit_config["methods"] = [{"name": "gradcam", "layers": ["encoder.layers.encoder_layer_1.ln_1"],
                              "options": {"grid": [5, 5]}}]
    res = cli("explain", image_tree, "-c", write_config(tmp_path, vit_config), "-o", tmp_path / "out")
    assert res.exit_code == 2, res
    assert "'methods[0].layers[0]'" in res.stderr and "grid [5, 5]" in res.stderr
    vit_config["methods"] = [{"name": "gradcam", "layers": ["encoder.layers.encoder_layer_1.ln_1"],
                              "options": {"layer_layout": "nhwc"}}]
    res = cli("explain", image_tree, "-c", write_config(tmp_path, vit_config), "-o", tmp_path / "out")
    assert res.exit_code == 2 and "needs a 4-D output" in res.stderr, res


def test_sweep_over_token_layers(cli, tmp_path, write_config, vit_config, image_tree):
    vit_config["methods"] = [{"name": "gradcam"}]
    cfg = write_config(tmp_path, vit_config)
    layers = "encoder.layers.encoder_layer_0.ln_1,encoder.layers.encoder_layer_1.ln_1"
    res = cli("sweep", image_tree, "-c", cfg, "-o", tmp_path / "out", "--layers", layers)
    assert res.exit_code == 0, res
    sweep = json.loads((tmp_path / "out" / "sweep" / "sweep.json").read_text())
    assert [layer["shape"] for layer in sweep["layers"]] == [[16, 4, 4], [16, 4, 4]]


@pytest.mark.slow
@pytest.mark.parametrize("model, layer", [
    ({"source": "timm", "name": "vit_tiny_patch16_224"}, "blocks.11.norm1"),
    ({"source": "timm", "name": "deit_tiny_patch16_224"}, "blocks.11.norm1"),
    ({"source": "torchvision", "name": "swin_t"}, "norm"),
])
def test_zoo_models_explained_by_default(cli, tmp_path, write_config, image_tree, model, layer):
    """Random weights, no layer named: the default layer and a non-blank map per image (exit 0)."""
    if model["source"] == "timm":
        pytest.importorskip("timm")
    cfg = write_config(tmp_path, {"model": model, "run": {"device": "cpu", "batch_size": 4}})
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", cfg, "-o", out, "-q")
    assert res.exit_code == 0, res
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {r["layer"] for r in rows} == {layer}
    for r in rows:
        assert np.ptp(np.load(out / r["map"])) > 0
