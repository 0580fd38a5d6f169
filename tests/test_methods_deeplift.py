"""DeepLift (Rescale rule) against hand-computed multipliers and its summation-to-delta property.

All models are tiny and built here; the expectations are worked out by hand in the comments.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xaicli.methods import TopK, create_method
from xaicli.methods.gradient._deeplift_rules import (
    ELEMENTWISE,
    MAX_POOLING,
    rescale_rules,
    uncovered_modules,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")

RAW = {"normalise": False, "percentile_clip": 100.0}


class TwoLayer(nn.Module):
    """x (B, 1, 1, 2) -> Linear(2, 4) -> ReLU (module / in-place / functional / method) -> Linear(4, 2)."""

    W1 = [[1.0, 0.0], [0.0, -1.0], [1.0, 1.0], [-1.0, 0.0]]
    W2 = [[2.0, -3.0, 4.0, -5.0], [-1.0, 1.0, 1.0, 1.0]]

    def __init__(self, relu: str):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(2, 4, bias=False), nn.Linear(4, 2, bias=False)
        self.relu_kind = relu
        self.act = nn.ReLU(inplace=relu == "module_inplace")
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor(self.W1))
            self.fc2.weight.copy_(torch.tensor(self.W2))

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x.flatten(1))
        if self.relu_kind.startswith("module"):
            h = self.act(h)
        elif self.relu_kind == "F.relu":
            h = F.relu(h)
        elif self.relu_kind == "F.relu_inplace":
            h = F.relu(h, inplace=True)
        elif self.relu_kind == "torch.relu_":
            h = torch.relu_(h)
        else:
            h = h.relu()
        return self.fc2(h)


# x = (1, -2), baseline x' = (-1, -1) (a black image when raw 0 normalises to -1):
#   z = W1 x = (1, 2, -1, -1), z' = W1 x' = (-1, 1, -2, 1); ReLU: y = (1, 2, 0, 0), y' = (0, 1, 0, 1)
#   multipliers dy/dz = (1/2, 1/1, 0/1, -1/-2) = (0.5, 1, 0, 0.5)
#   target 0: dL/dz = W2[0] * m = (1, -3, 0, -2.5); dL/dx = W1^T dL/dz = (3.5, 3); x - x' = (2, -1)
#             -> attributions (7, -3), summing to f(x) - f(x') = -4 - (-8) = 4
#   target 1: dL/dz = (-0.5, 1, 0, 0.5); dL/dx = (-1, -1) -> attributions (-2, 1), sum -1 = 1 - 2
BY_HAND = torch.tensor([[7.0, -3.0], [-2.0, 1.0]])
BLACK_IS_MINUS_1 = (torch.tensor([-1.0]), torch.tensor([1.0]))


@pytest.mark.parametrize("relu", ["module", "module_inplace", "F.relu", "F.relu_inplace", "torch.relu_",
                                  "method"])
def test_rescale_rule_by_hand(relu: str) -> None:
    model = TwoLayer(relu).eval()
    x = torch.tensor([[[[1.0, -2.0]]]])
    method = create_method("deeplift", model, options=RAW)
    raw = method.attribute(x, torch.tensor([[0, 1]]), method.make_call(input_range=BLACK_IS_MINUS_1,
                                                                       functional_relu=True))
    torch.testing.assert_close(raw.maps[None][0, :, 0, 0], BY_HAND)
    torch.testing.assert_close(raw.extras["deeplift_delta"], torch.zeros(1, 2))
    torch.testing.assert_close(raw.logits, model(x))  # the rules leave the forward pass alone
    plain = method.attribute(x, torch.tensor([[0, 1]]), method.make_call(input_range=BLACK_IS_MINUS_1))
    if relu.startswith("module"):  # ReLU modules follow the rule without the functional opt-in ...
        torch.testing.assert_close(plain.maps[None][0, :, 0, 0], BY_HAND)
    else:  # ... functional ones keep their gradient: (x - x') * dL/dx at x, and the sum is off
        grad_at_x = torch.tensor([[2.0, 3.0], [-1.0, -1.0]])  # W1^T (W2[c] * (z > 0))
        torch.testing.assert_close(plain.maps[None][0, :, 0, 0], grad_at_x * torch.tensor([2.0, -1.0]))
        assert plain.extras["deeplift_delta"].abs().max() > 0.5  # target 0: 4 - 3 + ... = 1, not 4


def test_max_pooling_rule_by_hand() -> None:
    """One 2x2 window: x = [[3, 1], [0, 2]] (max 3), x' = [[0, 5], [1, 0]] (max 5), dL/dy = g = 2.
    Rule: m = max(3, 5) = 5; x's argmax gets g (m - y') = 0, x''s argmax gets g (y - m) = -4, divided by
    x - x' = -4 there: gradient 1 = g * 1/2 at position (0, 1), 0 elsewhere; attributions (x - x') *
    gradient = -4 at (0, 1), summing to g (y - y') = -4. The ordinary gradient routes g to x's argmax."""
    pool = nn.MaxPool2d(2)
    x = torch.tensor([[[[3.0, 1.0], [0.0, 2.0]]]], requires_grad=True)
    ref = torch.tensor([[[[0.0, 5.0], [1.0, 0.0]]]])
    for rule, expected in ((True, [[0.0, 0.5], [0.0, 0.0]]), (False, [[1.0, 0.0], [0.0, 0.0]])):
        with rescale_rules(pool, max_pooling_rule=rule):
            out = pool(torch.cat([x, ref]))
        (g,) = torch.autograd.grad(2 * out[0].sum(), x)
        torch.testing.assert_close(g[0, 0] / 2, torch.tensor(expected))
        torch.testing.assert_close(out, F.max_pool2d(torch.cat([x, ref]), 2))


class EveryActivation(nn.Module):
    """conv -> batch norm -> a different covered activation on each pair of channels -> overlapping max
    pooling (as ResNet's stem) -> conv -> adaptive max pooling -> ReLU -> average pooling -> linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.acts = nn.ModuleList([
            nn.ReLU(), nn.LeakyReLU(0.1), nn.ELU(), nn.SiLU(), nn.GELU(), nn.Tanh(), nn.Sigmoid(),
            nn.Softplus(), nn.Hardswish(), nn.ReLU6(), nn.PReLU(2), nn.Mish()])
        width = 2 * len(self.acts)
        self.conv1, self.bn = nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2, self.pool2 = nn.Conv2d(width, 8, 3, padding=1), nn.AdaptiveMaxPool2d(3)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.AvgPool2d(3), nn.Flatten(), nn.Linear(8, 5))
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn(self.conv1(x))
        h = torch.cat([act(part) for act, part in zip(self.acts, h.split(2, dim=1), strict=True)], dim=1)
        return self.head(self.relu(self.pool2(self.conv2(self.pool1(h)))))


@pytest.mark.parametrize("baseline", ["black", "zeros", "blur", "uniform"])
def test_summation_to_delta_with_every_covered_nonlinearity(baseline: str) -> None:
    """sum_i DL_i = y(x) - y(x'): exact (float rounding) when every nonlinearity has a rule."""
    model = EveryActivation().eval()
    assert uncovered_modules(model) == []
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(12)) * 2
    rng = (torch.full((3,), -2.0), torch.full((3,), 2.0))
    method = create_method("deeplift", model, options={**RAW, "baseline": baseline})
    call = method.make_call(input_range=rng)
    out = method.attribute(x, TopK(3), call)
    base = method.baseline(x, call)
    with torch.no_grad():
        gap = model(x).gather(1, out.targets) - model(base).gather(1, out.targets)
    torch.testing.assert_close(out.maps[None].flatten(2).sum(-1), gap, rtol=1e-4, atol=1e-5)
    assert out.extras["deeplift_delta"].abs().max() < 1e-4 * max(1.0, float(gap.abs().max()))
    plain = create_method("deeplift", model, options={**RAW, "baseline": baseline,
                                                      "max_pooling": "gradient"})
    assert plain.attribute(x, out.targets, call).extras["deeplift_delta"].abs().max() > 1e-3


def test_uncovered_modules_warn_and_show_in_the_delta() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.Softmax(dim=1), nn.Linear(6, 3)).eval()
    assert uncovered_modules(model) == ["Softmax"]
    x = torch.randn(2, 2, 2, 2, generator=torch.Generator().manual_seed(13))
    with pytest.warns(UserWarning, match="no Rescale rule for Softmax"):
        out = create_method("deeplift", model, options=RAW).explain(x, TopK(2))
    assert out.extras["deeplift_delta"].abs().max() > 1e-6


def test_uncovered_means_every_other_nonlinear_torch_module() -> None:
    from xaicli.methods.gradient._deeplift_rules import _nonlinear_module_types

    nonlinear = set(_nonlinear_module_types())
    assert set(ELEMENTWISE) | set(MAX_POOLING) <= nonlinear
    assert {nn.Softmax, nn.LogSoftmax, nn.MultiheadAttention, nn.GLU, nn.LPPool2d} <= nonlinear
    assert not {nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxUnpool2d, nn.Identity} & nonlinear


def test_deeplift_of_a_linear_model_is_input_difference_times_weight() -> None:
    torch.manual_seed(14)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 5)).double().eval()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    rng = (torch.tensor([-1.0, -3.0]), torch.tensor([1.0, 3.0]))
    method = create_method("deeplift", model, options=RAW)
    raw = method.attribute(x, TopK(2), method.make_call(input_range=rng))
    w = model[1].weight.view(5, 2, 4, 4)
    black = rng[0].view(1, 2, 1, 1).double()
    torch.testing.assert_close(raw.maps[None], (x - black)[:, None] * w[raw.targets])


def test_reused_relu_module_is_fine() -> None:
    """Captum's hooks raise when a module runs twice per forward pass (torchvision ResNet blocks); the
    rules here are per call."""

    class Reuse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(15)
            self.a, self.b, self.relu, self.fc = nn.Linear(4, 4), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(self.relu(self.b(self.relu(self.a(x.flatten(1))))))

    model = Reuse().eval()
    x = torch.randn(2, 1, 2, 2)
    out = create_method("deeplift", model, options={**RAW, "baseline": "zeros"}).explain(x, TopK(2))
    assert out.extras["deeplift_delta"].abs().max() < 1e-5


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("kind", ["trace", "script"])
def test_torchscript_model_gets_the_same_rules(kind: str) -> None:
    """A TorchScript model loaded by xaicli is a tree of proxies: the rules find its layers by the class
    they were compiled from (in-place ReLUs, max pooling and an uncovered Softmax included)."""
    from xaicli.models.torchscript import hookable

    torch.manual_seed(16)
    eager = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Tanh(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(17))
    script = torch.jit.trace(eager, x) if kind == "trace" else torch.jit.script(eager)
    proxy = hookable(script)
    options = {**RAW, "baseline": "zeros"}
    expected = create_method("deeplift", eager, options=options).attribute(x, TopK(2))
    got = create_method("deeplift", proxy, options=options).attribute(x, TopK(2))
    torch.testing.assert_close(got.maps[None], expected.maps[None])
    assert got.extras["deeplift_delta"].abs().max() < 1e-5
    scripted_softmax = hookable(torch.jit.script(nn.Sequential(nn.Softmax(1), nn.ReLU())))
    assert uncovered_modules(scripted_softmax) == ["Softmax"]
