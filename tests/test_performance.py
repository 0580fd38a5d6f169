"""Speed-related engine behaviour that must not change results: channels-last on the CPU, the lazy
imports behind instant help and config errors, and ``run.compile`` keeping hooks working."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from xaicli.config import config_from_dict
from xaicli.engine import Explainer, explain_images
from xaicli.engine.batching import MICRO_BATCH_PIXELS, Batching
from xaicli.engine.compile import compile_around_hooks
from xaicli.engine.fold import fold_batchnorms
from xaicli.methods import TopK, create_method, get_method
from xaicli.models.loader import load_model


def _explainer(tiny_config: dict, methods: list[dict], **run) -> Explainer:
    """An explainer prepared as the CLI prepares its own (batch norms folded)."""
    tiny_config = {**tiny_config, "methods": methods, "run": {**tiny_config["run"], **run}}
    return Explainer(config_from_dict(tiny_config), fold_batchnorms=True, functional_relu=True)


def test_prepared_model_gives_the_maps_of_a_plain_call(tiny_config):
    """Channels-last and folded batch norms (the hooked conv's own batch norm stays) change no map."""
    explainer = _explainer(tiny_config, [{"name": "gradcam", "layers": ["features.1.conv"]},
                                         {"name": "scorecam", "layers": ["features.1.conv"]}])
    assert explainer.channels_last and explainer.folded == ["features.0.bn"]
    assert isinstance(explainer.loaded.model.features[1].bn, nn.BatchNorm2d)
    images = torch.rand(3, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    maps = explainer.explain_batch(images).maps
    plain = load_model(explainer.cfg).model  # a fresh, unprepared instance of the same model
    assert isinstance(plain.features[0].bn, nn.BatchNorm2d)
    x = (images - explainer.mean) / explainer.std
    for name in ("gradcam", "scorecam"):
        ref = create_method(name, plain, ["features.1.conv"]).explain(x, TopK(2)).maps["features.1.conv"]
        torch.testing.assert_close(maps[(name, "features.1.conv")], ref, atol=1e-5, rtol=0)


def test_help_and_config_errors_do_not_import_torch(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: {batch_size: 0}\n")
    code = f"""
import sys
from typer.testing import CliRunner
from xaicli.cli.app import app
runner = CliRunner()
assert runner.invoke(app, ["--help"]).exit_code == 0
assert runner.invoke(app, ["bench", "--help"]).exit_code == 0
res = runner.invoke(app, ["explain", "x.png", "-c", {str(bad)!r}, "-o", {str(tmp_path / "out")!r}])
assert res.exit_code == 2 and "run.batch_size" in res.output, res.output
assert "torch" not in sys.modules, "torch imported"
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


class _Shared(nn.Module):
    """conv -> bn, and the conv output also feeds the residual sum: folding would change the result."""

    def __init__(self, shared: bool):
        super().__init__()
        self.shared = shared
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())

    def forward(self, x):
        y = self.conv(x)
        return self.head(self.bn(y) + (y if self.shared else x))


@pytest.mark.parametrize("shared", [False, True])
def test_fold_batchnorms_only_where_the_conv_output_feeds_nothing_else(shared):
    torch.manual_seed(0)
    model = _Shared(shared)
    with torch.no_grad():
        for bn in (model.bn, model.head[1]):
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
    folded = fold_batchnorms(model, x[:1], protected=["head.0"])
    assert folded == ([] if shared else ["bn"])  # head.0 is "hooked": its batch norm is kept
    assert isinstance(model.bn, nn.Identity) != shared and isinstance(model.head[1], nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.body = nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()), nn.Conv2d(4, 4, 3))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.pool(self.body(self.stem(x))).flatten(1))


def test_compile_leaves_hooked_layers_and_their_ancestors_eager(monkeypatch):
    calls = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: calls.append(self))
    net = _Net()
    names = compile_around_hooks(net, ["body.0"])
    # root and body (ancestors) and body.0 (hooked) stay eager; their children with weights are compiled
    assert names == ["stem", "body.0.0", "body.1", "fc"]
    assert calls == [net.stem, net.body[0][0], net.body[1], net.fc]


@pytest.mark.slow
def test_compiled_run_keeps_hooks_working(tiny_config):
    pytest.importorskip("torch._inductor")
    methods = [{"name": "gradcam", "layers": ["features.1.conv"]}]
    images = torch.rand(2, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    eager = _explainer(tiny_config, methods).explain_batch(images).maps
    compiled = _explainer(tiny_config, methods, compile=True)
    assert "features.1.conv" not in compiled.compiled and compiled.compiled
    for _ in range(2):  # the second call runs the cached compiled code
        maps = compiled.explain_batch(images).maps
        key = ("gradcam", "features.1.conv")
        torch.testing.assert_close(maps[key], eager[key], atol=1e-4, rtol=0)


def test_cpu_micro_batches_give_the_same_maps(tiny_config):
    methods = [{"name": "gradcam", "layers": ["features.1.conv"]},
               {"name": "integrated_gradients", "options": {"steps": 4}}]
    whole = _explainer(tiny_config, methods, batch_size=8)
    split = _explainer(tiny_config, methods, batch_size=8)
    assert whole.batching.micro_batch == MICRO_BATCH_PIXELS // (16 * 20)  # small inputs: not split
    assert whole.batching.call_size == 8
    split.batching.call_size = 2
    images = torch.rand(5, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    a, b = explain_images(whole, images), explain_images(split, images)
    assert torch.equal(a.targets, b.targets) and a.maps.keys() == b.maps.keys()
    assert a.extras.keys() == b.extras.keys()
    torch.testing.assert_close(a.probs, b.probs)
    for k in a.maps:
        torch.testing.assert_close(a.maps[k], b.maps[k], atol=1e-5, rtol=0)


def test_chunk_sizes_are_capped_on_the_cpu_unless_configured():
    methods = [("scorecam", get_method("scorecam"), None), ("integrated_gradients",
               get_method("integrated_gradients"), 64), ("smoothgrad", get_method("smoothgrad"), None),
               ("gradcam", get_method("gradcam"), None)]
    cpu = Batching.plan(64, torch.device("cpu"), (224, 224), methods)
    micro = max(16, torch.get_num_threads())
    assert cpu.call_size == micro == cpu.micro_batch and cpu.batch_size == 64
    assert cpu.chunk_sizes == {"scorecam": micro, "integrated_gradients": 64, "smoothgrad": micro}
    assert cpu.capped == {"scorecam": micro, "smoothgrad": micro}
    cuda = Batching.plan(64, torch.device("cuda"), (224, 224), methods)  # nothing is split on a GPU
    assert cuda.call_size == 64 and cuda.micro_batch is None
    assert cuda.chunk_sizes == {"scorecam": 128, "integrated_gradients": 64, "smoothgrad": 64}


def test_a_later_explainer_hooking_a_folded_conv_gets_it_unfolded(tiny_config):
    """Two explainers on one loaded model: the second hooks the conv the first one folded."""
    first = _explainer(tiny_config, [{"name": "gradcam", "layers": ["features.1.conv"]}])
    assert first.folded == ["features.0.bn"]
    cfg = config_from_dict({**tiny_config, "methods": [{"name": "gradcam", "layers": ["features.0.conv"]}]})
    second = Explainer(cfg, loaded=first.loaded, fold_batchnorms=True)
    assert isinstance(second.loaded.model.features[0].bn, nn.BatchNorm2d)  # unfolded for the hook
    assert second.folded == ["features.1.bn"]
    images = torch.rand(2, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    maps = second.explain_batch(images).maps
    plain = load_model(cfg).model
    x = (images - second.mean) / second.std
    ref = create_method("gradcam", plain, ["features.0.conv"]).explain(x, TopK(2)).maps["features.0.conv"]
    torch.testing.assert_close(maps[("gradcam", "features.0.conv")], ref, atol=1e-5, rtol=0)
