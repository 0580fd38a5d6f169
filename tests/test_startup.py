"""Start-up (issue 15): one probe forward pass tells the loader, the planner and batch-norm folding what
they need; each start-up step is timed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xaicli.config import config_from_dict
from xaicli.engine import Explainer
from xaicli.errors import ModelError
from xaicli.models.layers import default_layer, describe_layers
from xaicli.models.loader import _load_weights, load_model
from xaicli.models.probe import probe_example, probe_model
from xaicli.timing import STARTUP, StageClock


class _CountForwards:
    """Counts forward passes of modules of one class (a global pre-hook)."""

    def __init__(self, class_name: str):
        self.class_name = class_name
        self.calls = 0

    def __enter__(self):
        def hook(module, _inputs):
            if type(module).__name__ == self.class_name:
                self.calls += 1

        self.handle = nn.modules.module.register_module_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("fold, expected", [(False, 1), (True, 2)])
def test_preparing_an_explainer_runs_the_model_once_plus_the_fold_check(tiny_config, fold, expected):
    """Output size, layer checks, the gradient check and the batch-norm pairs come from one probe pass;
    folding adds one pass that verifies the folded model."""
    cfg = config_from_dict({**tiny_config, "methods": [{"name": "gradcam", "layers": ["features.1.conv"]},
                                                       {"name": "saliency"}]})
    with _CountForwards("TinyCNN") as count:
        explainer = Explainer(cfg, fold_batchnorms=fold, functional_relu=True)
    assert count.calls == expected
    assert explainer.folded == (["features.0.bn"] if fold else [])
    assert explainer.loaded.probe.outputs == {}  # the module outputs are not kept after preparing


def test_default_layer_comes_from_the_probe_without_another_pass(tiny_config):
    cfg = config_from_dict({**tiny_config, "methods": [{"name": "gradcam"}]})
    loaded = load_model(cfg)
    with _CountForwards("TinyCNN") as count:
        explainer = Explainer(cfg, loaded=loaded)
    assert count.calls == 0
    assert explainer.methods[0].layers == [default_layer(loaded.model, loaded.input_shape)]


def test_probe_records_what_describe_layers_and_folding_need(tiny_config):
    loaded = load_model(config_from_dict(tiny_config), keep_probe_outputs=True)
    probe = loaded.probe
    assert probe.num_outputs == 4 and probe.input_shape == (3, 16, 20) and probe.output_requires_grad
    shapes = {i.name: i.shape for i in probe.layers}
    assert shapes["features.1.conv"] == (8, 16, 20) and shapes["fc"] == (4,)
    assert [(i.name, i.shape, i.order) for i in probe.layers] == [
        (i.name, i.shape, i.order) for i in describe_layers(loaded.model, loaded.input_shape)]
    assert probe.bn_pairs == [("features.0.conv", "features.0.bn"), ("features.1.conv", "features.1.bn")]
    torch.testing.assert_close(probe.example, probe_example((3, 16, 20)))
    with torch.no_grad():
        expected = loaded.model(probe.example)
    torch.testing.assert_close(probe.outputs[""], expected)  # "" = the model's own output
    assert set(probe.take_outputs()) >= {"features.0.conv", "fc"} and probe.outputs == {}


class _InPlaceOnInput(nn.Module):
    """Works without gradients, fails when its input requires them (an in-place op on the input)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x.mul_(1.0)
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_a_model_that_cannot_take_gradients_still_loads_and_gradient_methods_say_why():
    probe = probe_model(_InPlaceOnInput().eval(), (3, 8, 8))
    assert probe.num_outputs == 2 and not probe.output_requires_grad
    assert "leaf Variable that requires grad" in probe.grad_error
    from xaicli.engine.plan import _check_gradients

    _check_gradients(probe, [])  # Score-CAM alone needs no gradients
    with pytest.raises(ModelError, match="gradcam needs gradients, but the model fails when its input"):
        _check_gradients(probe, ["gradcam"])


def test_probe_errors_name_the_input_shape():
    with pytest.raises(ModelError, match="the model fails on a 3x5x5 input"):
        probe_model(nn.Sequential(nn.Conv2d(3, 4, 7), nn.Flatten()).eval(), (3, 5, 5))
    with pytest.raises(ModelError, match=r"must return class scores of shape \(batch, classes\)"):
        probe_model(nn.Conv2d(3, 4, 1).eval(), (3, 5, 5))


def test_every_start_up_step_is_timed(tiny_config):
    clock = StageClock()
    Explainer(config_from_dict(tiny_config), fold_batchnorms=True, clock=clock)
    stages = clock.to_dict()
    assert {"model", "probe", "plan", "fold", "prepare", "identity"} <= set(stages) <= set(STARTUP)
    assert all(v["wall_s"] >= 0 and v["cpu_s"] >= 0 and v["calls"] >= 1 for v in stages.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_torchvision_checkpoint_loads_without_initialising_weights_and_gives_the_same_model(
        tmp_path, monkeypatch, dtype):
    """A checkpoint that matches the architecture exactly is assigned to a model built on the meta
    device; one that does not (here: half precision) is copied into an ordinary model. Either way the
    model computes what torchvision's model with ``load_state_dict`` computes."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=10).eval()
    path = tmp_path / "mobilenet.pt"
    torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in reference.state_dict().items()},
               path)
    reference.load_state_dict(torch.load(path))  # what a user's own loading gives (fp16 values included)
    model = {"source": "torchvision", "name": "mobilenet_v3_small", "checkpoint": str(path)}
    cfg = config_from_dict({"model": model, "preprocess": {"size": [64, 64]}})
    import xaicli.models.loader as loader

    copied = []
    monkeypatch.setattr(loader, "_load_weights", lambda *a: copied.append(1) or _load_weights(*a))
    loaded = load_model(cfg)
    assert copied == ([] if dtype == torch.float32 else [1])  # assigned on meta / copied the ordinary way
    assert loaded.probe.num_outputs == 10 and len(loaded.classes) == 10  # head size read from the checkpoint
    params = dict(loaded.model.named_parameters())
    assert all(p.dtype == torch.float32 and p.requires_grad and not p.is_meta for p in params.values())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), reference(x))
