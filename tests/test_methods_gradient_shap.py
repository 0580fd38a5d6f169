"""GradientSHAP and input x gradient against closed forms on linear and quadratic models."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from xaicli.errors import ConfigError
from xaicli.methods import TopK, create_method

pytestmark = pytest.mark.usefixtures("torch_single_thread")

RAW = {"normalise": False, "percentile_clip": 100.0}
RANGE = (torch.tensor([-1.0, -2.0]), torch.tensor([1.0, 3.0]))  # raw 0 and raw 1 per channel, normalised


def linear_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 5)).double().eval()


class Square(nn.Module):
    """y = sum_i x_i^2 (one output): integrated gradients from a zero baseline is exactly x^2."""

    def forward(self, x: Tensor) -> Tensor:
        return x.pow(2).flatten(1).sum(1, keepdim=True)


def attribute(name: str, model: nn.Module, x: Tensor, targets, **options) -> Tensor:
    method = create_method(name, model, options={**RAW, **options})
    return method.attribute(x, targets, method.make_call(input_range=RANGE)).maps[None]  # (B, K, C, H, W)


def test_input_x_gradient_of_a_linear_model_is_input_times_weight() -> None:
    model = linear_model()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    out = create_method("input_x_gradient", model, options=RAW)
    raw = out.attribute(x, TopK(2))
    w = model[1].weight.view(5, 2, 4, 4)
    torch.testing.assert_close(raw.maps[None], x[:, None] * w[raw.targets])


def test_gradient_shap_with_a_fixed_zero_baseline_on_a_linear_model_is_input_times_weight() -> None:
    model = linear_model()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    targets = model(x).topk(2, dim=1).indices
    got = attribute("gradient_shap", model, x, targets, baseline="zeros", samples=7)
    torch.testing.assert_close(got, x[:, None] * model[1].weight.view(5, 2, 4, 4)[targets])


@pytest.mark.parametrize("baseline", ["uniform", "black_white"])
def test_gradient_shap_baselines_are_draws_in_the_input_range(baseline: str) -> None:
    """Linear model, one sample, no noise: attributions / weight = x - x'_1, so x'_1 can be read off."""
    model = linear_model()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    targets = torch.zeros(2, 1, dtype=torch.long)
    w = model[1].weight.detach().view(5, 2, 4, 4)[0]
    base = x - attribute("gradient_shap", model, x, targets, baseline=baseline, samples=1)[:, 0] / w
    lo, hi = (t.view(1, 2, 1, 1).double() for t in RANGE)
    assert ((base >= lo - 1e-9) & (base <= hi + 1e-9)).all()
    torch.testing.assert_close(base[0], base[1])  # one draw shared by the batch
    if baseline == "black_white":
        black, white = torch.isclose(base, lo.expand_as(base)), torch.isclose(base, hi.expand_as(base))
        assert (black | white).all() and black.any() and white.any()
    else:
        assert base.std() > 0.2 * float((hi - lo).min())  # noise, not a constant


def test_gradient_shap_is_integrated_gradients_in_expectation() -> None:
    """y = sum x^2 from a zero baseline: a_s uniform on [0, 1] gives E[2 a x * x] = x^2 (= IG)."""
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = attribute("gradient_shap", Square(), x, torch.tensor([[0]]), baseline="zeros", samples=4000,
                    chunk_size=4000)
    torch.testing.assert_close(got[0, 0], x[0] ** 2, rtol=0.03, atol=0)


def test_gradient_shap_averages_over_the_baseline_distribution() -> None:
    """Linear model: attributions = W (x - mean_s x'_s) -> W (x - (lo + hi) / 2) for many uniform draws."""
    model = linear_model()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    targets = torch.tensor([[2]])
    got = attribute("gradient_shap", model, x, targets, baseline="uniform", samples=4000, chunk_size=4000)
    mid = ((RANGE[0] + RANGE[1]) / 2).view(1, 2, 1, 1).double()
    w = model[1].weight.detach().view(5, 2, 4, 4)[2]
    torch.testing.assert_close(got[0, 0], w * (x[0] - mid[0]), rtol=0, atol=0.05 * float(w.abs().max()))


def test_gradient_shap_seed() -> None:
    model = linear_model()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    a = attribute("gradient_shap", model, x, TopK(1), samples=3, seed=1)
    torch.testing.assert_close(a, attribute("gradient_shap", model, x, TopK(1), samples=3, seed=1))
    assert not torch.allclose(a, attribute("gradient_shap", model, x, TopK(1), samples=3, seed=2))


def test_gradient_shap_bad_baseline_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="black_white"):
        create_method("gradient_shap", linear_model(), options={"baseline": "white"})
