"""Pixel-attribution methods: analytic expectations on tiny hand-built models, invariances, state hygiene.

All models are built here with seeded or hand-set weights; nothing is downloaded.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xaicli.errors import ConfigError
from xaicli.methods.base import TopK
from xaicli.methods.gradient._base import clip_percentile, gaussian_blur, reduce_channels
from xaicli.methods.gradient._relu_rules import PATCHED_FUNCTIONS
from xaicli.methods.registry import available_methods, create_method, methods_where

RAW = {"normalise": False, "percentile_clip": 100.0}
PIXEL = methods_where(family="pixel")
ORIGINAL_FUNCTIONS = {(owner, name): vars(owner).get(name) for owner, name in PATCHED_FUNCTIONS}
FAST = {  # keep the expensive methods quick on 2 CPU cores
    "integrated_gradients": {"steps": 8},
    "smoothgrad": {"samples": 4},
    "gradient_shap": {"samples": 4},
    "scorecam": {"chunk_size": 16},
}


# --- tiny models -------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """conv-bn-ReLU(inplace) x2, a functional ReLU, global pooling, linear: every ReLU flavour once."""

    def __init__(self, classes: int = 6, channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
        )
        self.conv3 = nn.Conv2d(12, 12, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.2),
                                  nn.Linear(48, classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.relu(self.conv3(self.features(x)), inplace=True))


def small_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for bn in (model.features[1], model.features[4]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def images(b: int = 2, c: int = 3, size: int = 12, seed: int = 1) -> Tensor:
    return torch.randn(b, c, size, size, generator=torch.Generator().manual_seed(seed))


def linear_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 5)).double().eval()


class TwoLayer(nn.Module):
    """x (B, 1, 1, 2) -> Linear(2, 4) -> ReLU (module / in-place / functional / method) -> Linear(4, 2)."""

    W1 = [[1.0, 0.0], [0.0, -1.0], [1.0, 1.0], [-1.0, 0.0]]
    W2 = [[2.0, -3.0, 4.0, -5.0], [-1.0, 1.0, 1.0, 1.0]]

    def __init__(self, relu: str):
        super().__init__()
        self.fc1 = nn.Linear(2, 4, bias=False)
        self.fc2 = nn.Linear(4, 2, bias=False)
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


# --- analytic expectations ---------------------------------------------------------------------------


def test_saliency_of_linear_model_is_abs_weight() -> None:
    model = linear_model()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    out = create_method("saliency", model, options=RAW).explain(x, TopK(2))
    w = model[1].weight.view(5, 2, 4, 4)
    expected = w[out.targets].abs().amax(dim=2)  # (B, K, 4, 4)
    torch.testing.assert_close(out.maps[None], expected.float())
    torch.testing.assert_close(out.logits, model(x))


@pytest.mark.parametrize("quad", ["riemann_trapezoid", "gausslegendre", "riemann_left", "riemann_middle"])
@pytest.mark.parametrize("steps", [2, 7, 50])
def test_ig_of_linear_model_is_input_times_weight(quad: str, steps: int) -> None:
    model = linear_model()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    method = create_method("integrated_gradients", model,
                           options={**RAW, "baseline": "zeros", "steps": steps, "method": quad})
    raw = method.attribute(x, TopK(2))
    w = model[1].weight.view(5, 2, 4, 4)
    expected = x[:, None] * w[raw.targets]  # (B, K, C, H, W)
    torch.testing.assert_close(raw.maps[None], expected, rtol=1e-10, atol=1e-12)
    assert raw.extras["ig_delta"].shape == (3, 2)
    assert raw.extras["ig_delta"].abs().max() < 1e-5
    options = {**RAW, "baseline": "zeros", "reduce": "sum", "steps": steps, "method": quad}
    summed = create_method("integrated_gradients", model, options=options)
    torch.testing.assert_close(summed.explain(x, raw.targets).maps[None], expected.sum(2).float())


# ReLU pre-activations for x = (1, -2): W1 x = (1, 2, -1, -1) -> units 0 and 1 active.
# Incoming gradients dL/dZ are the rows of W2; input gradient = W1^T (gated dL/dZ).
HAND = {  # target -> method -> expected input gradient
    0: {"saliency": [2.0, 3.0], "guided_backprop": [2.0, 0.0], "deconvnet": [6.0, 4.0]},
    1: {"saliency": [-1.0, -1.0], "guided_backprop": [0.0, -1.0], "deconvnet": [0.0, 0.0]},
}


@pytest.mark.parametrize("relu", ["module", "module_inplace", "F.relu", "F.relu_inplace", "torch.relu_",
                                  "method"])
@pytest.mark.parametrize("name", ["saliency", *(m for m in methods_where(relu_rules=True, needs_layer=False)
                                                if m in HAND[0])])  # DeepLift: tests/test_methods_deeplift.py
def test_relu_rules_by_hand(name: str, relu: str) -> None:
    model = TwoLayer(relu).eval()
    x = torch.tensor([[[[1.0, -2.0]]]])  # (1, 1, 1, 2)
    method = create_method(name, model, options=RAW)
    raw = method.attribute(x, torch.tensor([[0, 1]]), method.make_call(functional_relu=True))
    got = raw.maps[None][0, :, 0, 0]  # (K, 2)
    torch.testing.assert_close(got, torch.tensor([HAND[0][name], HAND[1][name]]))
    torch.testing.assert_close(raw.logits, model(x))  # the rule leaves the forward pass alone
    # without the opt-in, only ReLU modules follow the rule; functional ReLUs keep their gradient
    plain = method.attribute(x, torch.tensor([[0, 1]])).maps[None][0, :, 0, 0]
    expected = HAND if relu.startswith("module") else {k: HAND[k] | {name: HAND[k]["saliency"]} for k in HAND}
    torch.testing.assert_close(plain, torch.tensor([expected[0][name], expected[1][name]]))


def test_relu_rule_warns_when_model_has_no_relu() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.SiLU(), nn.Linear(3, 2)).eval()
    x = torch.randn(1, 1, 2, 2)
    with pytest.warns(UserWarning, match="found no ReLU in this model"):
        create_method("guided_backprop", model).explain(x, TopK(1), functional_relu=True)
    with pytest.warns(UserWarning, match="found no nn.ReLU module .functional ReLUs need functional_relu"):
        create_method("guided_backprop", model).explain(x, TopK(1))


def test_ig_completeness_small_cnn() -> None:
    """Completeness: sum IG = f(x) - f(x') up to quadrature error (the ReLU kinks), < 1 % at 256 steps.

    Random networks put most logits within ~1e-3 of each other, which makes the relative error
    ill-conditioned; non-negative conv filters make the features grow with brightness, so the target
    logits move by O(1) between the black baseline and the input, as in a trained model.
    """
    model = small_cnn(seed=4)
    with torch.no_grad():
        for conv in (model.features[0], model.features[3], model.conv3):
            conv.weight.abs_()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(4)) * 4 - 2  # in [-2, 2]
    method = create_method("integrated_gradients", model, options={"steps": 256, "chunk_size": 256})
    black_is_minus_2 = (torch.full((3,), -2.0), torch.full((3,), 2.0))  # black = -2 in every channel
    out = method.explain(x, TopK(2), input_range=black_is_minus_2)
    with torch.no_grad():
        gap = model(x).gather(1, out.targets) - model(torch.full_like(x, -2.0)).gather(1, out.targets)
    rel = out.extras["ig_delta"].abs() / gap.abs()
    assert rel.max() < 1e-2, rel


def test_ig_completeness_fashion_mnist() -> None:
    fm = pytest.importorskip("xaicli.models.fashion_mnist")
    if not fm.WEIGHTS_PATH.is_file():
        pytest.skip("bundled Fashion-MNIST weights not present yet")
    from pathlib import Path

    import numpy as np
    from PIL import Image

    model = fm.fashion_mnist_cnn()
    mean, std = torch.tensor(fm.MEAN), torch.tensor(fm.STD)
    # the real sample images (one in five): completeness is a property of the model on its data; on
    # uniform-noise inputs, far outside it, one image reached 1.1e-2 with the trapezoid rule
    files = sorted((Path(__file__).resolve().parent.parent / "sample_images").rglob("*.png"))[::5]
    if not files:
        pytest.skip("sample images not present")
    arr = np.stack([np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255 for f in files])
    x = (torch.from_numpy(arr)[:, None] - mean) / std
    method = create_method("integrated_gradients", model, options={"steps": 256, "chunk_size": 256})
    out = method.explain(x, TopK(1), input_range=((0 - mean) / std, (1 - mean) / std))
    with torch.no_grad():
        black = ((0 - mean) / std).view(1, 1, 1, 1).expand_as(x)
        gap = model(x).gather(1, out.targets) - model(black).gather(1, out.targets)
    assert (out.extras["ig_delta"].abs() / gap.abs()).max() < 1e-2


def test_ig_baselines_follow_input_range() -> None:
    method = create_method("integrated_gradients", small_cnn(), options={"baseline": "black"})
    x = images(2)
    torch.testing.assert_close(method.baseline(x), torch.zeros_like(x))  # input_range unknown
    lo, hi = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(method.baseline(x, (lo, hi)), lo.view(1, 3, 1, 1).expand_as(x))
    method.opts["baseline"] = "uniform"
    u = method.baseline(x, (lo, hi))
    assert ((u >= lo.view(1, 3, 1, 1)) & (u <= hi.view(1, 3, 1, 1))).all()
    torch.testing.assert_close(u[0], u[1])  # one seeded draw shared by the batch
    torch.testing.assert_close(u, method.baseline(x, (lo, hi)))  # seeded
    method.opts["baseline"] = "blur"
    blurred = method.baseline(x)
    torch.testing.assert_close(blurred.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.15, rtol=0)
    assert blurred.std() < x.std() / 2
    torch.testing.assert_close(gaussian_blur(torch.ones(1, 2, 5, 5), 5.0), torch.ones(1, 2, 5, 5))


# --- SmoothGrad --------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", methods_where(can_wrap=True))
def test_smoothgrad_sigma_zero_equals_base(base: str) -> None:
    model, x = small_cnn(), images(2)
    base_options = {"steps": 6} if base == "integrated_gradients" else {}
    reference = create_method(base, model, options=base_options).attribute(x, TopK(2)).maps[None]
    for variant, expected in [("smoothgrad", reference), ("smoothgrad_sq", reference**2),
                              ("vargrad", torch.zeros_like(reference))]:
        sg = create_method("smoothgrad", model, options={"base": base, "sigma": 0.0, "variant": variant,
                                                         "base_options": base_options})
        torch.testing.assert_close(sg.attribute(x, TopK(2)).maps[None], expected, rtol=1e-5, atol=1e-7)


def test_smoothgrad_noise_is_relative_to_input_range() -> None:
    """f(x) = sum x^2: gradient 2x, so vargrad = Var(2 e) = 4 sigma_c^2 with sigma_c = sigma (hi_c - lo_c)."""

    class Square(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.pow(2).flatten(1).sum(1, keepdim=True)

    x = torch.zeros(1, 2, 16, 16)
    method = create_method("smoothgrad", Square(), options={**RAW, "variant": "vargrad", "sigma": 0.1,
                                                            "samples": 200, "chunk_size": 1000})
    call = method.make_call(input_range=(torch.tensor([-1.0, -2.0]), torch.tensor([1.0, 2.0])))  # 2 and 4
    var = method.attribute(x, torch.tensor([[0]]), call).maps[None][0, 0].mean(dim=(1, 2))  # (C,)
    torch.testing.assert_close(var, torch.tensor([4 * 0.2**2, 4 * 0.4**2]), rtol=0.05, atol=0)


# --- batching invariances ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, options", [
    ("integrated_gradients", {"steps": 7, "baseline": "blur", "method": "gausslegendre"}),
    ("smoothgrad", {"samples": 5, "variant": "vargrad"}),
    ("smoothgrad", {"samples": 3, "base": "integrated_gradients", "base_options": {"steps": 4}}),
    ("smoothgrad", {"samples": 3, "base": "deeplift"}),
    ("gradient_shap", {"samples": 5, "baseline": "black_white", "sigma": 0.1}),
    ("gradient_shap", {"samples": 4, "baseline": "blur"}),
])
def test_chunked_equals_unchunked(name: str, options: dict) -> None:
    model, x = small_cnn(), images(3)
    whole = create_method(name, model, options={**options, "chunk_size": 1000}).attribute(x, TopK(2))
    chunked = create_method(name, model, options={**options, "chunk_size": 3}).attribute(x, TopK(2))
    torch.testing.assert_close(chunked.maps[None], whole.maps[None], rtol=1e-4, atol=1e-6)
    for key, value in whole.extras.items():
        torch.testing.assert_close(chunked.extras[key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", PIXEL)
def test_batch_of_n_equals_n_batches_of_one(name: str) -> None:
    model, x = small_cnn(), images(3)
    layers = ["features.3"] if name == "guided_gradcam" else []
    method = create_method(name, model, layers, options={**FAST.get(name, {}), "chunk_size": 5}
                           if available_methods()[name].chunked else {})
    batch = method.explain(x, TopK(2))
    for i in range(3):
        single = method.explain(x[i : i + 1], TopK(2))
        assert torch.equal(single.targets, batch.targets[i : i + 1])
        for key, maps in batch.maps.items():
            torch.testing.assert_close(single.maps[key], maps[i : i + 1], rtol=1e-4, atol=1e-5)


# --- reduction, clipping, options --------------------------------------------------------------------


def test_reductions_and_clipping() -> None:
    attr = torch.tensor([[3.0, -4.0], [-1.0, 0.0]]).view(1, 1, 2, 1, 2)  # (B, K, C=2, H=1, W=2)
    assert reduce_channels(attr, "abs_max").flatten().tolist() == [3.0, 4.0]
    assert reduce_channels(attr, "abs_sum").flatten().tolist() == [4.0, 4.0]
    assert reduce_channels(attr, "sum").flatten().tolist() == [2.0, -4.0]
    assert reduce_channels(attr, "l2").flatten().tolist() == pytest.approx([math.sqrt(10.0), 4.0])
    maps = torch.arange(-5.0, 5.0).view(1, 1, 2, 5)  # |map| = 5 4 3 2 1 0 1 2 3 4
    clipped = clip_percentile(maps, 60.0)  # sorted |map| = 0 1 1 2 2 3 3 4 4 5: the 6th of 10 is 3
    assert clipped.flatten().tolist() == [-3.0, -3.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 3.0]
    assert torch.equal(clip_percentile(maps, 100.0), maps)


def test_signed_maps_and_normalisation() -> None:
    model, x = small_cnn(), images(2)
    signed = create_method("integrated_gradients", model, options={"reduce": "sum", "steps": 4})
    assert signed.is_signed()
    maps = signed.explain(x, TopK(2)).maps[None]
    assert maps.min() < 0 < maps.max()
    torch.testing.assert_close(maps.flatten(2).abs().amax(-1), torch.ones(2, 2))
    unsigned = create_method("saliency", model, options={"percentile_clip": 90.0})
    assert not unsigned.is_signed()
    maps = unsigned.explain(x, TopK(1)).maps[None]
    assert maps.min() == 0 and maps.max() == 1
    assert (maps == 1).sum() >= 0.1 * 144 * 2 - 2  # the top 10 % were clipped to the maximum


@pytest.mark.parametrize("name, options, key", [
    ("saliency", {"percentile_clip": 101.0}, "methods[0].options.percentile_clip"),
    ("integrated_gradients", {"steps": 1}, "methods[0].options.steps"),
    ("smoothgrad", {"base_options": [1]}, "methods[0].options.base_options"),
    ("smoothgrad", {"base_options": {"stepz": 3}, "base": "integrated_gradients"},
     "methods[0].options.base_options.stepz"),
    ("smoothgrad", {"base_options": {"steps": 1}, "base": "integrated_gradients"},
     "methods[0].options.base_options.steps"),
    ("smoothgrad", {"base": "gradcam"}, "methods[0].options.base"),
])
def test_bad_options(name: str, options: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        create_method(name, small_cnn(), options=options)
    assert err.value.key == key


# --- state hygiene -----------------------------------------------------------------------------------


class Flaky(nn.Module):
    """Wraps a model; raises on the ``fail_at``-th forward call, or in the backward pass."""

    def __init__(self, inner: nn.Module, forward_fail_at: int = 0, fail_backward: bool = False):
        super().__init__()
        self.inner, self.forward_fail_at, self.fail_backward = inner, forward_fail_at, fail_backward
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == self.forward_fail_at:
            raise RuntimeError("injected forward failure")
        out = self.inner(x)
        return _FailBackward.apply(out) if self.fail_backward else out


class _FailBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        raise RuntimeError("injected backward failure")


def forward_calls(method, model: Flaky, x: Tensor) -> int:
    """How many forward passes of ``model`` one explain call of ``method`` makes (on a run that does not
    fail; the model's failure settings are restored afterwards)."""
    saved = model.forward_fail_at, model.fail_backward
    model.forward_fail_at, model.fail_backward, model.calls = 0, False, 0
    try:
        method.explain(x, TopK(2))
        return model.calls
    finally:
        (model.forward_fail_at, model.fail_backward), model.calls = saved, 0


def assert_clean(model: nn.Module, flags: dict[str, bool], training: dict[str, bool]) -> None:
    for name, module in model.named_modules():
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(module, hooks), f"{hooks} left on {name!r}"
        assert "forward" not in vars(module), f"forward of {name!r} still replaced"
        assert module.training == training[name]
    for name, p in model.named_parameters():
        assert p.requires_grad == flags[name], name
    for (owner, attr), original in ORIGINAL_FUNCTIONS.items():
        assert vars(owner).get(attr) is original, f"{attr} not restored"
    assert torch.relu is ORIGINAL_FUNCTIONS[(torch, "relu")] and F.relu is ORIGINAL_FUNCTIONS[(F, "relu")]
    assert "relu" not in vars(torch.Tensor)


@pytest.mark.parametrize("failure", [None, "forward1", "forward2", "backward"])
@pytest.mark.parametrize("name", PIXEL)
def test_state_restored(name: str, failure: str | None) -> None:
    inner = small_cnn()
    inner.features[0].weight.requires_grad_(False)  # a mixed starting state, restored exactly
    model = Flaky(inner, forward_fail_at={"forward1": 1, "forward2": 2}.get(failure, 0),
                  fail_backward=failure == "backward").train()  # BatchNorm and Dropout in training mode
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    training = {n: m.training for n, m in model.named_modules()}
    x = images(2)
    with torch.no_grad():
        before = inner.eval()(x)
        for n, m in model.named_modules():
            m.train(training[n])
    layers = ["inner.features.3"] if name == "guided_gradcam" else []
    method = create_method(name, model, layers, options=FAST.get(name, {}))
    if failure is None:
        method.explain(x, TopK(2))
    else:
        single_forward = forward_calls(method, model, x) == 1
        try:
            method.explain(x, TopK(2))
        except RuntimeError as err:
            assert "injected" in str(err)
        else:
            assert failure == "forward2" and single_forward, "the injected failure did not surface"
    assert_clean(model, flags, training)
    model.forward_fail_at, model.fail_backward = 0, False
    with torch.no_grad():
        after = inner.eval()(x)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_mixed_training_modes_restored() -> None:
    model = small_cnn()
    model.head.train()  # e.g. Monte-Carlo dropout in an otherwise eval model
    create_method("saliency", model).explain(images(2), TopK(1))
    assert not model.training and not model.features.training and model.head.training


# --- contract over the whole registry ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(available_methods()))
def test_method_contract(name: str) -> None:
    model, x = small_cnn(), images(2)
    cls = available_methods()[name]
    layers = ["features.3"] if cls.needs_layer else []
    method = create_method(name, model, layers, options=FAST.get(name, {}))
    out = method.explain(x, TopK(3))
    logits = model(x)
    assert torch.equal(out.targets, logits.topk(3, dim=1).indices)
    torch.testing.assert_close(out.logits, logits)
    assert set(out.maps) == (set(layers) if cls.needs_layer else {None})
    signed = method.is_signed()
    for maps in out.maps.values():
        assert maps.shape == (2, 3, 12, 12)
        assert maps.dtype == torch.float32
        assert torch.isfinite(maps).all()
        assert maps.min() >= (-1 if signed else 0) and maps.max() <= 1
    for value in out.extras.values():
        assert value.shape == (2, 3)


@pytest.mark.parametrize("name", list(available_methods()))
def test_methods_work_inside_no_grad(name: str) -> None:
    model, x = small_cnn(), images(2)
    layers = ["features.3"] if available_methods()[name].needs_layer else []
    method = create_method(name, model, layers, options=FAST.get(name, {}))
    reference = method.explain(x, TopK(2))
    with torch.no_grad():  # the engine may call methods from inside no_grad / inference code
        out = method.explain(x, TopK(2))
    for key, maps in reference.maps.items():
        torch.testing.assert_close(out.maps[key], maps)


@pytest.mark.parametrize("name, old", [("integrated_gradients", "internal_batch_size"),
                                       ("smoothgrad", "internal_batch_size"), ("scorecam", "batch_size")])
def test_old_chunk_option_names_still_work_with_a_warning(name: str, old: str) -> None:
    model = small_cnn()
    layers = ["features.3"] if available_methods()[name].needs_layer else []
    with pytest.warns(FutureWarning, match=f"{old}: option renamed to 'chunk_size'"):
        method = create_method(name, model, layers, options={old: 7})
    assert method.opts["chunk_size"] == 7 and old not in method.opts
    with pytest.raises(ConfigError, match="old name of 'chunk_size'"):
        create_method(name, model, layers, options={old: 7, "chunk_size": 8})


def test_smoothgrad_help_names_every_method_it_can_smooth() -> None:
    from xaicli.methods import get_method

    help_text = get_method("smoothgrad").options["base"].help
    assert all(name in help_text for name in methods_where(can_wrap=True)), help_text
