"""Parity of the pixel methods with Captum on the same models, inputs, targets and noise.

Compared on raw (un-normalised, unreduced) attributions of a random-weight torchvision ResNet-18 at
64x64 and of the bundled Fashion-MNIST model. Every comparison asserts a Pearson correlation >= 0.99 per
image, and where the two compute the same numbers, closeness as well. Known, documented differences:

* IG ``riemann_trapezoid``: Captum's weights sum to (n - 1) / n, ours to 1 -> ours x (n - 1) / n.
* SmoothGrad: sigma is a fraction of the input range per channel (ours) vs absolute stdevs (Captum);
  both sides are fed the same noise draws by replacing ``torch.normal`` during Captum's call.
* Guided Grad-CAM: Captum upsamples with nearest by default; ours is compared with ``upsample: nearest``.
* DeepLift: Captum's hooks refuse a module that runs twice in one forward pass, and torchvision's
  ResNet blocks reuse their ReLU, so Captum gets a copy whose blocks use one ReLU module per call
  (``benchmarks.references.one_relu_per_call``), the same function. Where a ReLU module feeds a max
  pooling (ResNet's stem, every block of the bundled model), the ReLU's hook in Captum receives the
  pooling's ordinary gradient instead of its max-pooling rule's result (found while writing this test:
  Captum's attributions then do not sum to the logit's change). That is xaicli's ``max_pooling:
  gradient``, which is what is compared; summation-to-delta of the default ``max_pooling: rule`` is
  checked on the same models.
* GradientSHAP: both are fed the same draws (path points, baselines, noise) by replacing Captum's
  ``np.random.uniform``, ``np.random.choice`` and ``torch.normal`` during its call.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from benchmarks.references import one_relu_per_call  # the copy Captum's DeepLift needs of a ResNet
from xaicli.methods.registry import create_method

captum_attr = pytest.importorskip("captum.attr")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.parity

RAW = {"normalise": False, "percentile_clip": 100.0}
IMAGENET_MEAN, IMAGENET_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


@dataclass
class Case:
    model: nn.Module
    x: Tensor  # (B, C, H, W), normalised
    targets: Tensor  # (B,)
    input_range: tuple[Tensor, Tensor]  # normalised raw 0 and raw 1 per channel
    layer: str

    def module(self, name: str) -> nn.Module:
        return dict(self.model.named_modules())[name]


def normalised_images(b: int, c: int, size: int, mean: Tensor, std: Tensor, seed: int) -> Tensor:
    raw = torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed))
    return (raw - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


@pytest.fixture(scope="module", params=["resnet18", "fashion_mnist"])
def case(request: pytest.FixtureRequest) -> Case:
    if request.param == "resnet18":
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval()
        x = normalised_images(2, 3, 64, IMAGENET_MEAN, IMAGENET_STD, seed=1)
        rng = ((0 - IMAGENET_MEAN) / IMAGENET_STD, (1 - IMAGENET_MEAN) / IMAGENET_STD)
        return Case(model, x, torch.tensor([3, 7]), rng, "layer4")
    fm = pytest.importorskip("xaicli.models.fashion_mnist")
    if not fm.WEIGHTS_PATH.is_file():
        pytest.skip("bundled Fashion-MNIST weights not present")
    mean, std = torch.tensor(fm.MEAN), torch.tensor(fm.STD)
    x = normalised_images(2, 1, 28, mean, std, seed=2)
    return Case(fm.fashion_mnist_cnn(), x, torch.tensor([1, 8]), ((0 - mean) / std, (1 - mean) / std),
                "features.2")


def pearson(ours: Tensor, theirs: Tensor) -> float:
    """Smallest per-image Pearson correlation of two (B, ...) tensors."""
    a, b = ours.detach().flatten(1).double(), theirs.detach().flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    return float(r.min())


def ours(case: Case, name: str, layers: tuple[str, ...] = (), **options) -> Tensor:
    """Raw (B, C, H, W) attributions of the single target per image."""
    method = create_method(name, case.model, list(layers), options={**RAW, **options})
    raw = method.attribute(case.x, case.targets[:, None], method.make_call(input_range=case.input_range,
                                                                           functional_relu=True))
    return raw.maps[layers[0] if layers else None][:, 0]


def check(name: str, mine: Tensor, theirs: Tensor, record, exact: bool = True) -> None:
    theirs = theirs.detach()
    r = pearson(mine, theirs)
    record(f"pearson_{name}", r)
    print(f"{name}: pearson {r:.9f} (1 - r = {1 - r:.1e})")
    assert r >= 0.99, f"{name}: correlation {r}"
    if exact:
        torch.testing.assert_close(mine, theirs.to(mine.dtype), rtol=1e-3, atol=1e-6 * theirs.abs().max())


@pytest.mark.parametrize("name, captum_cls", [
    ("saliency", "Saliency"), ("guided_backprop", "GuidedBackprop"), ("deconvnet", "Deconvolution"),
    ("input_x_gradient", "InputXGradient"),
])
def test_gradient_parity(case: Case, name: str, captum_cls: str, record_property) -> None:
    mine = ours(case, name)
    theirs = getattr(captum_attr, captum_cls)(case.model).attribute(case.x.clone(), target=case.targets)
    if name == "saliency":
        mine = mine.abs()  # Captum's Saliency defaults to abs=True
    check(name, mine, theirs, record_property)


@pytest.mark.parametrize("quad", ["riemann_trapezoid", "gausslegendre"])
def test_integrated_gradients_parity(case: Case, quad: str, record_property) -> None:
    steps = 8
    method = create_method("integrated_gradients", case.model,
                           options={**RAW, "steps": steps, "method": quad, "baseline": "black"})
    raw = method.attribute(case.x, case.targets[:, None], method.make_call(input_range=case.input_range,
                                                                           functional_relu=True))
    mine, delta = raw.maps[None][:, 0], raw.extras["ig_delta"][:, 0]
    theirs, their_delta = captum_attr.IntegratedGradients(case.model).attribute(
        case.x, baselines=method.baseline(case.x, case.input_range), target=case.targets, n_steps=steps,
        method=quad, internal_batch_size=64, return_convergence_delta=True)
    if quad == "riemann_trapezoid":
        mine = mine * (steps - 1) / steps  # Captum's trapezoid weights sum to (n - 1) / n
    else:
        torch.testing.assert_close(delta, their_delta.float(), rtol=1e-3, atol=1e-4)
    check(f"integrated_gradients[{quad}]", mine, theirs, record_property)


@pytest.mark.parametrize("base, variant", [
    ("saliency", "smoothgrad"), ("saliency", "smoothgrad_sq"), ("saliency", "vargrad"),
    ("guided_backprop", "smoothgrad"), ("integrated_gradients", "smoothgrad"),
])
def test_noise_tunnel_parity(case: Case, base: str, variant: str, monkeypatch, record_property) -> None:
    samples, sigma, seed = 3, 0.15, 0
    ig_options = {"steps": 4, "method": "gausslegendre", "baseline": "zeros"}
    base_options = ig_options if base == "integrated_gradients" else {}
    mine = ours(case, "smoothgrad", base=base, variant=variant, samples=samples, sigma=sigma, seed=seed,
                base_options=base_options)

    # The same draws as SmoothGrad: sample s uses e_s ~ N(0, 1) of shape (C, H, W) from a generator seeded
    # with `seed`, shared by all images, scaled by sigma * (hi_c - lo_c).
    gen = torch.Generator().manual_seed(seed)
    eps = torch.stack([torch.randn(case.x.shape[1:], generator=gen) for _ in range(samples)])  # (S, C, H, W)
    lo, hi = case.input_range
    noise = eps * (sigma * (hi - lo)).view(1, -1, 1, 1)
    rows = noise.repeat(case.x.shape[0], 1, 1, 1)  # Captum's rows are image-major: row b * S + s

    def same_noise(mean: float, std: Tensor) -> Tensor:
        assert std.shape == rows.shape
        return rows.clone()

    captum_method = {"saliency": captum_attr.Saliency, "guided_backprop": captum_attr.GuidedBackprop,
                     "integrated_gradients": captum_attr.IntegratedGradients}[base](case.model)
    extra = {"abs": False} if base == "saliency" else {}
    if base == "integrated_gradients":
        extra = {"n_steps": 4, "method": "gausslegendre"}
    with monkeypatch.context() as patch:
        patch.setattr(torch, "normal", same_noise)
        theirs = captum_attr.NoiseTunnel(captum_method).attribute(
            case.x, nt_type=variant, nt_samples=samples, stdevs=1.0, target=case.targets, **extra)
    check(f"smoothgrad[{base},{variant}]", mine, theirs, record_property, exact=variant != "vargrad")


def test_guided_gradcam_parity(case: Case, record_property) -> None:
    mine = ours(case, "guided_gradcam", (case.layer,), upsample="nearest")
    theirs = captum_attr.GuidedGradCam(case.model, case.module(case.layer)).attribute(
        case.x, target=case.targets, interpolate_mode="nearest")
    check("guided_gradcam", mine, theirs, record_property)


@pytest.mark.parametrize("baseline", ["black", "blur"])
def test_deeplift_parity(case: Case, baseline: str, record_property) -> None:
    options = {**RAW, "baseline": baseline}
    method = create_method("deeplift", case.model, options=options)
    call = method.make_call(input_range=case.input_range, functional_relu=True)
    base = method.baseline(case.x, call)
    delta = method.attribute(case.x, case.targets[:, None], call).extras["deeplift_delta"][:, 0]
    with torch.no_grad():
        logit = case.model(torch.cat([case.x, base])).gather(1, case.targets.repeat(2)[:, None])[:, 0]
    gap = logit[: len(case.x)] - logit[len(case.x) :]
    assert (delta.abs() <= 1e-4 * gap.abs().clamp_min(1)).all(), (delta, gap)  # summation-to-delta

    like_captum = create_method("deeplift", case.model, options={**options, "max_pooling": "gradient"})
    raw = like_captum.attribute(case.x, case.targets[:, None], call)
    reference = one_relu_per_call(case.model)
    theirs, their_delta = captum_attr.DeepLift(reference).attribute(
        case.x.clone(), baselines=base, target=case.targets, return_convergence_delta=True)
    torch.testing.assert_close(raw.extras["deeplift_delta"][:, 0], their_delta.float(), rtol=1e-3, atol=1e-4)
    check(f"deeplift[{baseline}]", raw.maps[None][:, 0], theirs, record_property)


@pytest.mark.parametrize("baseline, sigma", [("uniform", 0.0), ("black_white", 0.1), ("black", 0.0)])
def test_gradient_shap_parity(case: Case, baseline: str, sigma: float, monkeypatch, record_property) -> None:
    import numpy as np

    samples, seed = 3, 5
    mine = ours(case, "gradient_shap", samples=samples, baseline=baseline, sigma=sigma, seed=seed)

    # GradientSHAP's draws, in its documented order: for each sample s, the path point a_s, then (random
    # baselines) u_s ~ U(0, 1) of one image's shape, then (sigma > 0) e_s ~ N(0, 1); shared by all images
    b, shape = case.x.shape[0], case.x.shape[1:]
    gen = torch.Generator().manual_seed(seed)
    alphas, us, es = [], [], []
    for _ in range(samples):
        alphas.append(torch.rand((), generator=gen))
        us.append(torch.rand(shape, generator=gen) if baseline != "black" else torch.zeros(shape))
        es.append(torch.randn(shape, generator=gen) if sigma > 0 else torch.zeros(shape))
    lo, hi = (t.view(1, -1, 1, 1) for t in case.input_range)
    u = torch.stack(us)  # (S, C, H, W)
    bases = {"uniform": lo + u * (hi - lo), "black_white": torch.where(u < 0.5, lo, hi),
             "black": lo.expand_as(u)}[baseline]
    # Captum's rows are image-major (row b * S + s): the same draws for every image
    base_rows = bases.repeat(b, 1, 1, 1)
    noise_rows = (torch.stack(es) * (sigma * (hi - lo))).repeat(b, 1, 1, 1)
    alpha_rows = torch.stack(alphas).repeat(b).numpy()

    def normal(mean: float, std: Tensor) -> Tensor:
        assert std.shape == noise_rows.shape
        return noise_rows.clone()

    with monkeypatch.context() as patch:
        patch.setattr(torch, "normal", normal)
        patch.setattr(np.random, "choice", lambda n, size: np.arange(size))
        patch.setattr(np.random, "uniform", lambda lo_, hi_, size: alpha_rows[:size])
        theirs = captum_attr.GradientShap(case.model).attribute(
            case.x, baselines=base_rows, n_samples=samples, stdevs=1.0, target=case.targets)
    check(f"gradient_shap[{baseline},{sigma}]", mine, theirs, record_property)
