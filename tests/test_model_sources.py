"""Model sources beyond torchvision: timm (with its own preprocessing), torch.export programs (with layer
hooks), and Hugging Face-style classifiers through the python factory (logits from ``outputs.logits``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.tiny_vit import tiny_torchvision_vit
from xaicli.config import config_from_dict
from xaicli.engine import Explainer
from xaicli.errors import ConfigError, ModelError, UnknownNameError
from xaicli.methods import TopK, create_method
from xaicli.models.layers import default_layer, describe_layers
from xaicli.models.loader import load_model

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _cfg(tmp_path: Path, model: dict, **rest) -> object:
    return config_from_dict({"model": model, "run": {"device": "cpu"}, **rest}, base_dir=tmp_path)


# --- timm --------------------------------------------------------------------------------------------------


def test_timm_model_with_its_own_preprocessing(tmp_path):
    timm = pytest.importorskip("timm")
    loaded = load_model(_cfg(tmp_path, {"source": "timm", "name": "vit_tiny_patch16_224"}))
    data = timm.data.resolve_data_config({}, model=loaded.model)
    assert loaded.size == (224, 224) and loaded.mode == "RGB"
    assert loaded.mean == tuple(data["mean"]) and loaded.std == tuple(data["std"])
    assert loaded.resize == "shorter" and loaded.resize_size == int(224 / data["crop_pct"])
    assert loaded.interpolation == data["interpolation"] == "bicubic"
    assert len(loaded.classes) == 1000
    # the config's preprocess keys win
    loaded = load_model(_cfg(tmp_path, {"source": "timm", "name": "vit_tiny_patch16_224",
                                        "kwargs": {"img_size": 64}},
                             preprocess={"size": [64, 64], "resize": "exact", "interpolation": "bilinear"}))
    assert (loaded.size, loaded.resize, loaded.interpolation) == ((64, 64), "exact", "bilinear")
    assert loaded.model.patch_embed.grid_size == (4, 4)


def test_timm_checkpoint_with_another_head_size(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=32).eval()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "deit.pt")
    loaded = load_model(_cfg(tmp_path, {"source": "timm", "name": "deit_tiny_patch16_224",
                                        "checkpoint": "deit.pt", "kwargs": {"img_size": 32}},
                             preprocess={"size": [32, 32]}))
    x = torch.randn(2, 3, 32, 32)
    assert len(loaded.classes) == 3
    torch.testing.assert_close(loaded.model(x), model(x))
    assert default_layer(loaded.model, (3, 32, 32)) == "blocks.11.norm1"


def test_timm_errors(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    with pytest.raises(UnknownNameError, match="vit_tiny_patch16_224"):
        load_model(_cfg(tmp_path, {"source": "timm", "name": "vit_tiny_patch16_2244"}))

    def offline(*_args, **_kwargs):
        raise OSError("couldn't connect to huggingface.co")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ModelError, match="pretrained weights failed .*couldn't connect"):
        load_model(_cfg(tmp_path, {"source": "timm", "name": "vit_tiny_patch16_224", "pretrained": True}))
    monkeypatch.setitem(sys.modules, "timm", None)  # not installed
    with pytest.raises(ConfigError, match=r"pip install 'xaicli\[timm\]'"):
        load_model(_cfg(tmp_path, {"source": "timm", "name": "vit_tiny_patch16_224"}))


def test_pretrained_is_checked_against_source_and_checkpoint(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="model.pretrained"):
        _cfg(tmp_path, {"source": "builtin", "pretrained": True})
    with pytest.raises(ConfigError, match="either pretrained"):
        _cfg(tmp_path, {"source": "timm", "name": "x", "pretrained": True, "checkpoint": "w.pt"})


# --- torch.export ----------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def export(model: nn.Module, shape: tuple[int, ...], path: Path, dynamic: bool = True) -> Path:
    x = torch.randn(2, *shape)
    dims = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    torch.export.save(torch.export.export(model.eval(), (x,), dynamic_shapes=dims), str(path))
    return path


@pytest.mark.parametrize("name", ["gradcam", "scorecam"])
def test_exported_cnn_keeps_layer_names_types_and_hooks(tmp_path, name):
    model = SmallCNN().eval()
    export(model, (3, 10, 12), tmp_path / "cnn.pt2")
    loaded = load_model(_cfg(tmp_path, {"source": "export", "path": "cnn.pt2"}))
    assert loaded.size == (10, 12)  # from the program's example input
    infos = {i.name: i for i in describe_layers(loaded.model, loaded.input_shape)}
    assert infos["features.1"].type == "BatchNorm2d" and infos["features.1"].shape == (6, 10, 12)
    x = torch.randn(3, 3, 10, 12)
    ours = create_method(name, loaded.model, ["features.3"]).explain(x, TopK(2)).maps["features.3"]
    eager = create_method(name, model, ["features.3"]).explain(x, TopK(2)).maps["features.3"]
    torch.testing.assert_close(ours, eager, atol=1e-5, rtol=1e-4)


def test_exported_vit_default_layer_and_token_layout(tmp_path):
    model = tiny_torchvision_vit(layers=2)
    export(model, (3, 12, 12), tmp_path / "vit.pt2")
    loaded = load_model(_cfg(tmp_path, {"source": "export", "path": "vit.pt2"}))
    layer = default_layer(loaded.model, loaded.input_shape)
    assert layer == "encoder.layers.encoder_layer_1.ln_1"  # found through the recorded original types
    x = torch.randn(2, 3, 12, 12)
    ours = create_method("gradcam", loaded.model, [layer]).explain(x, TopK(1)).maps[layer]
    eager = create_method("gradcam", model, [layer]).explain(x, TopK(1)).maps[layer]
    torch.testing.assert_close(ours, eager, atol=1e-5, rtol=1e-4)


def test_run_identity_of_timm_and_exported_models(tmp_path):
    """The CLI's explainer (batch norms folded) digests the model for resume fingerprints: an exported
    program by its .pt2 file's bytes (code and weights in one), a timm model by its architecture (name +
    kwargs) and state dict."""
    import hashlib

    from xaicli.models.digest import model_digest, state_dict_digest

    path = export(SmallCNN(), (3, 10, 12), tmp_path / "cnn.pt2")
    cfg = _cfg(tmp_path, {"source": "export", "path": "cnn.pt2"}, methods=[{"name": "gradcam",
                                                                          "layers": ["features.3"]}])
    explainer = Explainer(cfg, fold_batchnorms=True)
    digest = model_digest(cfg, explainer.loaded.model)
    assert digest.source == "export" and digest.weights == digest.code == (
        "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest())
    pytest.importorskip("timm")
    model = {"source": "timm", "name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32, "depth": 1}}
    cfg = _cfg(tmp_path, model, methods=[{"name": "gradcam"}], preprocess={"size": [32, 32]})
    Explainer(cfg, fold_batchnorms=True)  # digests the model (the CLI's path)
    loaded = load_model(cfg)
    digest = model_digest(cfg, loaded.model)
    assert digest.source == "timm"
    assert digest.architecture == 'vit_tiny_patch16_224 {"depth": 1, "img_size": 32}'
    assert digest.weights == state_dict_digest(loaded.model.state_dict())  # random weights: their bytes
    assert "(random weights)" in digest.description


def test_exported_program_errors(tmp_path):
    export(SmallCNN(), (3, 10, 12), tmp_path / "static.pt2", dynamic=False)
    with pytest.raises(ModelError, match="dynamic batch size"):
        load_model(_cfg(tmp_path, {"source": "export", "path": "static.pt2"}))
    (tmp_path / "junk.pt2").write_bytes(b"not a program")
    with pytest.raises(ModelError, match="torch.export.load"):
        load_model(_cfg(tmp_path, {"source": "export", "path": "junk.pt2"}))


# --- Hugging Face-style outputs through the python factory ------------------------------------------------

HF_STANDIN = '''
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ImageClassifierOutput:  # the shape of transformers.modeling_outputs.ImageClassifierOutput
    logits: torch.Tensor
    hidden_states: tuple | None = None


class StandIn(nn.Module):
    """Returns an object with .logits, as transformers' *ForImageClassification models do."""

    def __init__(self, as_dict=False):
        super().__init__()
        torch.manual_seed(0)
        self.as_dict = as_dict
        self.embeddings = nn.Conv2d(3, 8, 4, stride=4)
        self.classifier = nn.Linear(8, 5)

    def forward(self, pixel_values):
        h = self.embeddings(pixel_values)
        logits = self.classifier(h.mean(dim=(2, 3)))
        return {"logits": logits} if self.as_dict else ImageClassifierOutput(logits=logits)


def build():
    return StandIn().eval()


def build_dict():
    return StandIn(as_dict=True).eval()
'''


@pytest.mark.parametrize("factory", ["build", "build_dict"])
def test_hugging_face_style_output_is_read_from_logits(tmp_path, factory):
    (tmp_path / "hf_model.py").write_text(HF_STANDIN)
    cfg = _cfg(tmp_path, {"source": "python", "factory": f"hf_model.py:{factory}"},
               preprocess={"size": [16, 16]}, methods=[{"name": "gradcam"}, {"name": "saliency"}],
               targets={"topk": 2})
    explainer = Explainer(cfg)
    assert len(explainer.classes) == 5
    assert explainer.methods[0].layers == ["embeddings"]  # the model's own layer names
    out = explainer.explain_batch(torch.rand(2, 3, 16, 16))
    assert out.maps[("gradcam", "embeddings")].shape == (2, 2, 16, 16)
    assert out.targets.shape == (2, 2)


def test_torchvision_pretrained_uses_the_weights_transforms(tmp_path, monkeypatch):
    """Without a hub the weights cannot be fetched: the download is replaced by a local build, so the
    test checks what xaicli takes from the weights' own transforms (swin_t: Resize(232), bicubic)."""
    import torchvision

    real = torchvision.models.get_model

    def offline(name, weights=None, **kwargs):
        return real(name, weights=None, **kwargs)

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    loaded = load_model(_cfg(tmp_path, {"source": "torchvision", "name": "swin_t", "pretrained": True}))
    assert (loaded.size, loaded.resize, loaded.resize_size, loaded.interpolation) == (
        (224, 224), "shorter", 232, "bicubic")

    def unreachable(name, weights=None, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models, "get_model", unreachable)
    with pytest.raises(ModelError, match="no hub access.*name resolution"):
        load_model(_cfg(tmp_path, {"source": "torchvision", "name": "swin_t", "pretrained": True}))
