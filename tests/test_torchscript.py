"""TorchScript models made hookable (xaicli.models.torchscript): outputs, names, hooks, gradients, CAMs."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
import torchvision
from torch import nn

from xaicli.errors import ModelError
from xaicli.methods import TopK, create_method
from xaicli.methods.hooks import capture_activations, inference_state
from xaicli.models.torchscript import ScriptModuleProxy, hookable, iter_unsupported, load_torchscript

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning"),
              pytest.mark.usefixtures("torch_single_thread")]


class Block(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(Block(3, 8), Block(8, 16))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class Branchy(nn.Module):
    """Data-dependent control flow, a loop building a list, a module called twice, a helper method."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.convs = nn.ModuleList([nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)])
        self.head = nn.Linear(12, 3)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        feats = [x]
        for conv in self.convs:
            feats.append(self.act(conv(feats[-1])))
        y = torch.cat(feats, dim=1)
        if bool(y.sum() > 0):
            y = y * 2
        else:
            y = y - 1
        for i in range(len(feats)):
            y = y + float(i)
        return self.head(self.pool(y))


class Forked(nn.Module):
    """``torch.jit.fork`` cannot be interpreted step by step: this module runs as one compiled call."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fut = torch.jit.fork(self.inner, x)
        return torch.jit.wait(fut)


class WithForked(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Forked()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x).mean(dim=(2, 3)))



def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so BN layers are not near-identities in eval mode."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


ARCHS = {  # name: (factory, layer hooked in every test)
    "small": (SmallCNN, "features.1.bn"),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), "layer4"),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(weights=None), "features.17.conv"),
}
CASES = [(arch, kind) for arch in ARCHS for kind in ("trace", "script")]


def _save_load(eager: nn.Module, x: torch.Tensor, kind: str, path) -> nn.Module:
    script = torch.jit.trace(eager, x, check_trace=False) if kind == "trace" else torch.jit.script(eager)
    torch.jit.save(script, str(path))
    return load_torchscript(path)


@pytest.fixture(scope="module", params=CASES, ids=[f"{a}-{k}" for a, k in CASES])
def case(request, tmp_path_factory):
    arch, kind = request.param
    factory, layer = ARCHS[arch]
    torch.manual_seed(0)
    eager = factory().eval()
    _randomise_bn(eager)
    x = torch.randn(2, 3, 64, 64)
    proxy = _save_load(eager, x, kind, tmp_path_factory.mktemp("ts") / f"{arch}-{kind}.pt")
    return eager, proxy, x, layer


def test_outputs_names_and_parameters(case):
    eager, proxy, x, _ = case
    assert isinstance(proxy, ScriptModuleProxy) and not list(iter_unsupported(proxy))
    with torch.no_grad():
        torch.testing.assert_close(proxy(x), eager(x), atol=1e-5, rtol=1e-5)
    names = [n for n, _ in proxy.named_modules()]
    assert names == [n for n, _ in proxy.script_module.named_modules()]
    assert names == [n for n, _ in eager.named_modules()]
    # The very tensors of the script module: freezing them through the proxy freezes the computation.
    assert [n for n, _ in proxy.named_parameters()] == [n for n, _ in eager.named_parameters()]
    assert all(p is q for p, q in zip(proxy.parameters(), proxy.script_module.parameters(), strict=True))
    assert [n for n, _ in proxy.named_buffers()] == [n for n, _ in eager.named_buffers()]


def test_hook_sees_the_same_activation(case):
    eager, proxy, x, layer = case
    with capture_activations(eager, [layer], differentiable=False) as a_eager, torch.no_grad():
        eager(x)
    with capture_activations(proxy, [layer], differentiable=False) as a_proxy, torch.no_grad():
        proxy(x)
    torch.testing.assert_close(a_proxy[layer], a_eager[layer], atol=1e-5, rtol=1e-5)


def test_hook_replacement_output_is_used_downstream(case):
    eager, proxy, x, layer = case
    outs = []
    for model in (eager, proxy):
        handle = dict(model.named_modules())[layer].register_forward_hook(lambda _m, _i, out: out * 0)
        try:
            with torch.no_grad():
                outs.append(model(x))
        finally:
            handle.remove()
    with torch.no_grad():
        plain = proxy(x)
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(outs[1], plain, atol=1e-4)


def test_gradient_at_hooked_layer_matches_eager(case):
    eager, proxy, x, layer = case
    grads = []
    for model in (eager, proxy):
        with inference_state(model), capture_activations(model, [layer]) as acts:
            if model is proxy:  # frozen through the proxy = frozen in the script module
                assert not any(p.requires_grad for p in proxy.script_module.parameters())
            logits = model(x)
            grads.append(torch.autograd.grad(logits[:, 1].sum(), acts[layer])[0])
    assert all(p.requires_grad for p in proxy.script_module.parameters())
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-4)


def test_gradcam_on_torchscript_equals_eager(case):
    eager, proxy, x, layer = case
    ref = create_method("gradcam", eager, [layer]).explain(x, TopK(2))
    got = create_method("gradcam", proxy, [layer]).explain(x, TopK(2))
    assert torch.equal(got.targets, ref.targets)
    torch.testing.assert_close(got.maps[layer], ref.maps[layer], atol=1e-4, rtol=1e-4)


def test_control_flow_loops_lists_and_repeated_calls(tmp_path):
    torch.manual_seed(0)
    eager = Branchy().eval()
    x = torch.randn(2, 3, 16, 16)
    proxy = _save_load(eager, x, "script", tmp_path / "branchy.pt")
    assert not list(iter_unsupported(proxy))
    for sign in (1.0, -1.0):  # both branches of the data-dependent `if`
        torch.testing.assert_close(proxy(sign * x), eager(sign * x), atol=1e-5, rtol=1e-5)
    calls = {"eager": 0, "proxy": 0}
    handles = [m.act.register_forward_hook(lambda *_a, k=k: calls.__setitem__(k, calls[k] + 1))
               for k, m in (("eager", eager), ("proxy", proxy))]
    eager(x), proxy(x)
    for h in handles:
        h.remove()
    assert calls == {"eager": 3, "proxy": 3}


def test_train_eval_and_dtype_reach_the_script_module(tmp_path):
    torch.manual_seed(0)
    eager = SmallCNN().eval()
    _randomise_bn(eager)
    x = torch.randn(4, 3, 16, 16)
    proxy = _save_load(eager, x, "script", tmp_path / "small.pt")
    proxy.train()
    assert all(m.training for m in proxy.script_module.modules())
    eager.train()
    torch.testing.assert_close(proxy(x), eager(x), atol=1e-5, rtol=1e-5)  # batch statistics
    proxy.eval(), eager.eval()
    assert not any(m.training for m in proxy.script_module.modules())
    proxy.double(), eager.double()
    assert all(p.dtype == torch.float64 for p in proxy.script_module.parameters())
    torch.testing.assert_close(proxy(x.double()), eager(x.double()))


def test_unsupported_module_runs_compiled_and_refuses_inner_hooks(tmp_path):
    torch.manual_seed(0)
    eager = WithForked().eval()
    x = torch.randn(2, 3, 8, 8)
    proxy = _save_load(eager, x, "script", tmp_path / "forked.pt")
    torch.testing.assert_close(proxy(x), eager(x), atol=1e-5, rtol=1e-5)
    assert [n for n, _ in iter_unsupported(proxy)] == ["block"]
    assert [n for n, _ in proxy.named_modules()] == [n for n, _ in eager.named_modules()]

    # The opaque module itself and the layers outside it can be hooked ...
    with capture_activations(proxy, ["block", "head"]) as acts:
        proxy(x)
    torch.testing.assert_close(acts["block"], eager.block(x), atol=1e-5, rtol=1e-5)
    # ... layers inside it cannot, with a message that says why and what to do.
    with pytest.raises(ModelError, match=r"cannot hook layer 'block\.inner\.0'.*'block'.*prim::fork.*traced"):
        with capture_activations(proxy, ["block.inner.0"]):
            pass
    with pytest.raises(ModelError, match="prim::fork"):
        dict(proxy.named_modules())["block.inner"].register_forward_pre_hook(lambda *_: None)

    with pytest.raises(ModelError, match=r"TorchScript module 'block' uses prim::fork \(at .*\); .*traced"):
        hookable(torch.jit.load(str(tmp_path / "forked.pt")), strict=True)


class Pair(NamedTuple):
    logits: torch.Tensor
    features: torch.Tensor


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> Pair:
        f = self.body(x)
        return Pair(self.head(f.mean(dim=(2, 3))), f)


def test_in_memory_modules_and_named_tuple_outputs():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    small = SmallCNN().eval()
    traced = hookable(torch.jit.trace(small, x, check_trace=False))  # a fresh trace: submodules refuse calls
    torch.testing.assert_close(traced(x), small(x))
    eager = TwoOutputs().eval()
    script = torch.jit.script(eager)
    out, ref = hookable(script)(x), script(x)
    assert type(out).__name__ == type(ref).__name__ == "Pair" and out._fields == ("logits", "features")
    torch.testing.assert_close(out.logits, eager(x).logits)


def test_load_errors_and_eager_passthrough(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_torchscript(tmp_path / "missing.pt")
    pickled = tmp_path / "state_dict.pt"
    torch.save(nn.Linear(2, 2).state_dict(), pickled)
    with pytest.raises(ModelError, match="cannot load .* as a TorchScript model"):
        load_torchscript(pickled)
    eager = nn.Linear(2, 2)
    assert hookable(eager) is eager
