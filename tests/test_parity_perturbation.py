"""Parity of the perturbation methods with Captum (Occlusion, FeatureAblation, Lime, KernelShap).

Same model, inputs, targets and fill (Captum's ``baselines``); for the superpixel methods the same
feature mask (our superpixels) and the same samples, handed to Captum through its ``perturb_func``
(and for Lime our kernel through ``similarity_func`` and ``SkLearnRidge(alpha)`` as the surrogate).
Raw maps (``normalise: false``) against Captum's attributions of the first channel (every channel of a
pixel gets the same value). Known difference: Captum's KernelShap weights the empty and the full
coalition 10^6 where ours makes them exact constraints, so those maps agree to about 1e-5 relative.
Models: a random-weight torchvision ResNet-18 at 64 x 64 and the bundled Fashion-MNIST CNN.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from xaicli.methods import create_method

captum_attr = pytest.importorskip("captum.attr")
torchvision = pytest.importorskip("torchvision")
pytest.importorskip("sklearn")  # Captum's SkLearnRidge / SkLearnLinearRegression surrogates

pytestmark = pytest.mark.parity

RAW = {"normalise": False, "percentile_clip": 100.0}
IMAGENET_MEAN, IMAGENET_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


@dataclass
class Case:
    model: nn.Module
    x: Tensor  # (B, C, H, W), normalised
    targets: Tensor  # (B,)
    input_range: tuple[Tensor, Tensor]


def smooth_images(b: int, c: int, size: int, mean: Tensor, std: Tensor, seed: int) -> Tensor:
    """Normalised images with regions SLIC can find (low-resolution noise, upsampled)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, c, size // 8, size // 8, generator=gen)
    raw = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").clamp(0, 1)
    return (raw - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


@pytest.fixture(scope="module", params=["resnet18", "fashion_mnist"])
def case(request: pytest.FixtureRequest) -> Case:
    if request.param == "resnet18":
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval()
        x = smooth_images(2, 3, 64, IMAGENET_MEAN, IMAGENET_STD, seed=1)
        rng = ((0 - IMAGENET_MEAN) / IMAGENET_STD, (1 - IMAGENET_MEAN) / IMAGENET_STD)
        return Case(model, x, torch.tensor([3, 7]), rng)
    fm = pytest.importorskip("xaicli.models.fashion_mnist")
    if not fm.WEIGHTS_PATH.is_file():
        pytest.skip("bundled Fashion-MNIST weights not present")
    mean, std = torch.tensor(fm.MEAN), torch.tensor(fm.STD)
    x = smooth_images(2, 1, 32, mean, std, seed=2)[..., 2:30, 2:30].contiguous()
    return Case(fm.fashion_mnist_cnn(), x, torch.tensor([1, 8]), ((0 - mean) / std, (1 - mean) / std))


def ours(case: Case, name: str, **options) -> tuple[Tensor, object]:
    """Raw (B, H, W) maps of the single target per image, and the method."""
    method = create_method(name, case.model, options={**RAW, "score": "logit", **options})
    out = method.explain(case.x, case.targets[:, None], input_range=case.input_range, chunk_size=64)
    return out.maps[None][:, 0], method


def forward(case: Case, score: str):
    return case.model if score == "logit" else (lambda x: case.model(x).softmax(dim=1))


def black(case: Case) -> Tensor:
    return case.input_range[0].view(1, -1, 1, 1).expand_as(case.x[:1]).contiguous()


def check(mine: Tensor, theirs: Tensor, rtol: float = 1e-4) -> None:
    theirs = theirs.detach().float()
    scale = float(theirs.abs().max())
    assert scale > 0
    torch.testing.assert_close(mine, theirs, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("fill, score", [("mean", "logit"), ("black", "probability")])
def test_occlusion_equals_captum(case: Case, fill: str, score: str) -> None:
    window, stride = ([16, 16], [8, 8]) if case.x.shape[-1] == 64 else ([6, 6], [4, 4])
    mine, _ = ours(case, "occlusion", window=window, stride=stride, fill=fill, score=score)
    c = case.x.shape[1]
    theirs = captum_attr.Occlusion(forward(case, score)).attribute(
        case.x, sliding_window_shapes=(c, *window), strides=(c, *stride), target=case.targets,
        baselines=0.0 if fill == "mean" else black(case), perturbations_per_eval=32)
    torch.testing.assert_close(theirs[:, 1:], theirs[:, :1].expand_as(theirs[:, 1:]))
    check(mine, theirs[:, 0])


@pytest.mark.parametrize("fill", ["mean", "black"])
def test_feature_ablation_equals_captum(case: Case, fill: str) -> None:
    mine, method = ours(case, "feature_ablation", fill=fill, n_segments=24)
    labels, _ = method.superpixels(case.x, case.input_range)
    theirs = captum_attr.FeatureAblation(case.model).attribute(
        case.x, target=case.targets, feature_mask=labels[:, None].long(),
        baselines=0.0 if fill == "mean" else black(case), perturbations_per_eval=32)
    check(mine, theirs[:, 0])


def replay(samples: Tensor):
    """A Captum ``perturb_func`` that yields ``samples`` (P, M), one (1, M) row per call."""

    def perturb(_inputs, **_kwargs):
        yield from (row[None].long() for row in samples)

    return perturb


def test_lime_equals_captum_given_our_samples_kernel_and_ridge(case: Case) -> None:
    from captum._utils.models.linear_model import SkLearnRidge

    alpha = 1.0
    mine, method = ours(case, "lime", samples=60, alpha=alpha, n_segments=12)
    labels, counts = method.superpixels(case.x, case.input_range)
    for i, m in enumerate(counts):
        samples = method.coalitions(m)
        lime = captum_attr.Lime(case.model, interpretable_model=SkLearnRidge(alpha=alpha),
                                similarity_func=lambda _x, _p, z, **_kw: method.kernel(z.float()),
                                perturb_func=replay(samples))
        theirs = lime.attribute(case.x[i : i + 1], target=int(case.targets[i]), n_samples=len(samples),
                                feature_mask=labels[i : i + 1, None].long(), perturbations_per_eval=32)
        check(mine[i : i + 1], theirs[:, 0], rtol=1e-3)


def test_kernel_shap_equals_captum_given_our_samples(case: Case) -> None:
    mine, method = ours(case, "kernel_shap", samples=60, n_segments=12, fill="black")
    labels, counts = method.superpixels(case.x, case.input_range)
    for i, m in enumerate(counts):
        sampled = method.coalitions(m)[1:]  # ours: the empty coalition first, then the draws
        shap = captum_attr.KernelShap(case.model)
        # Captum's own generator yields the full and the empty coalition first (its 10^6-weight ends)
        shap.perturb_func = replay(torch.cat([torch.ones(1, m), torch.zeros(1, m), sampled]))
        theirs = shap.attribute(case.x[i : i + 1], target=int(case.targets[i]), n_samples=len(sampled) + 2,
                                feature_mask=labels[i : i + 1, None].long(), baselines=black(case),
                                perturbations_per_eval=32)
        check(mine[i : i + 1], theirs[:, 0], rtol=1e-3)
