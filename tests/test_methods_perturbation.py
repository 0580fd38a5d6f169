"""Perturbation methods against analytic truth, brute force and their own invariants.

Analytic models: a score that is the mean of a fixed patch (occlusion, feature ablation and RISE must
put the predicted magnitudes on that patch) and a score that is linear in the superpixel means (Kernel
SHAP must return the exact Shapley values, LIME the linear coefficients). Brute force: exact Shapley
values by enumerating every coalition, leave-one-out by hand. Invariants: a batch of N equals N batches
of 1, chunked equals unchunked, seeds reproduce, top-k shares the forward passes, and the number of
forward passes is the documented cost. Every model is built here; nothing is downloaded.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from test_methods_pixel import small_cnn
from torch import Tensor, nn

from xaicli.errors import ConfigError
from xaicli.methods import TopK, create_method, methods_where
from xaicli.methods.perturbation._segments import grid_labels

PERTURBATION = methods_where(family="perturbation")
SUPERPIXEL = ["feature_ablation", "lime", "kernel_shap"]
RAW = {"normalise": False, "percentile_clip": 100.0, "score": "logit"}
CHEAP = {"rise": {"masks": 64, "grid": 4}, "lime": {"samples": 48}, "kernel_shap": {"samples": 48},
         "occlusion": {"window": 4, "stride": 2}}


def cheap(name: str, **options) -> dict:
    return {**CHEAP.get(name, {}), **({"segments": "grid", "n_segments": 9} if name in SUPERPIXEL else {}),
            **options}


def images(b: int = 3, c: int = 3, h: int = 12, w: int = 14, seed: int = 1) -> Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


# --- analytic models -----------------------------------------------------------------------------------


class PatchMean(nn.Module):
    """logits = (m, -m, 0) with m the mean of the input over a fixed patch (every channel)."""

    def __init__(self, top: int, left: int, height: int, width: int):
        super().__init__()
        self.box = (slice(top, top + height), slice(left, left + width))

    def forward(self, x: Tensor) -> Tensor:
        m = x[:, :, self.box[0], self.box[1]].mean(dim=(1, 2, 3))
        return torch.stack([m, -m, torch.zeros_like(m)], dim=1)


class SegmentLinear(nn.Module):
    """logits = beta @ (means of the input over each segment, every channel) + bias; one label map for
    the whole batch (B, H, W) or per image."""

    def __init__(self, labels: Tensor, beta: Tensor, bias: Tensor):
        super().__init__()
        self.labels, self.beta, self.bias = labels, beta, bias  # (B or 1, H, W), (N, M), (N,)

    def forward(self, x: Tensor) -> Tensor:
        m = self.beta.shape[1]
        onehot = nn.functional.one_hot(self.labels.flatten(1), m).to(x.dtype)  # (B?, HW, M)
        sums = torch.einsum("bp,bpm->bm", x.mean(dim=1).flatten(1), onehot.expand(x.shape[0], -1, -1))
        means = sums / onehot.sum(dim=1)  # (B, M)
        return means @ self.beta.T + self.bias


def raw_maps(name: str, model: nn.Module, x: Tensor, targets, input_range=None, **options) -> Tensor:
    return create_method(name, model, options={**RAW, **options}).explain(x, targets,
                                                                           input_range=input_range).maps[None]


def test_occlusion_of_a_patch_mean_is_the_patch_mean_on_the_patch():
    """Window = stride = 4 on a grid that has the patch as one window: only that window changes the
    score, by exactly m (logit 0) and -m (logit 1), so the map is m on the patch and 0 elsewhere."""
    model = PatchMean(4, 8, 4, 4)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) + 0.5
    maps = raw_maps("occlusion", model, x, torch.tensor([[0, 1]]), window=4, stride=4)
    m = x[:, :, 4:8, 8:12].mean(dim=(1, 2, 3))
    expected = torch.zeros(2, 16, 16)
    expected[:, 4:8, 8:12] = m[:, None, None]
    torch.testing.assert_close(maps[:, 0], expected)
    torch.testing.assert_close(maps[:, 1], -expected)


@pytest.mark.parametrize("h, w, window, stride", [(16, 18, [4, 5], [2, 3]), (15, 13, [4, 4], [3, 3])])
def test_occlusion_with_overlapping_and_clipped_windows_equals_brute_force(h, w, window, stride):
    """Overlapping windows, the last one clipped at the border: the mean drop over the covering windows,
    by hand (positions 0, s, 2s, ... while the previous window does not reach the border)."""
    model = PatchMean(3, 5, 6, 7)
    x = torch.rand(1, 2, h, w, generator=torch.Generator().manual_seed(1)) + 0.5
    maps = raw_maps("occlusion", model, x, torch.tensor([[0]]), window=window, stride=stride)[0, 0]
    clean = float(model(x)[0, 0])
    total, count = torch.zeros(h, w), torch.zeros(h, w)
    tops = [i * stride[0] for i in range(math.ceil((h - window[0]) / stride[0]) + 1)]
    lefts = [i * stride[1] for i in range(math.ceil((w - window[1]) / stride[1]) + 1)]
    for top, left in itertools.product(tops, lefts):
        occluded = x.clone()
        occluded[:, :, top : top + window[0], left : left + window[1]] = 0
        total[top : top + window[0], left : left + window[1]] += clean - float(model(occluded)[0, 0])
        count[top : top + window[0], left : left + window[1]] += 1
    assert count.min() >= 1
    torch.testing.assert_close(maps, total / count)


def test_feature_ablation_of_a_patch_mean_puts_each_cells_share_on_it():
    """Grid cells of 4 x 4; the patch straddles cells, so each cell's value is its part of the patch
    sum divided by the patch size; cells outside the patch get exactly 0."""
    model = PatchMean(2, 6, 6, 4)  # rows 2..7, cols 6..9
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2)) + 0.5
    maps = raw_maps("feature_ablation", model, x, torch.tensor([[0]]), segments="grid", n_segments=16)
    labels = grid_labels(16, 16, 16)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[2:8, 6:10] = True
    for b in range(2):
        expected = torch.zeros(16, 16)
        for cell in range(16):
            part = (labels == cell) & inside
            expected[labels == cell] = x[b, 0][part].sum() / inside.sum()
        torch.testing.assert_close(maps[b, 0], expected)
        assert (maps[b, 0][~(labels[..., None] == labels[inside].unique()).any(-1)] == 0).all()


def test_rise_is_the_score_weighted_mean_mask_and_peaks_on_the_patch():
    """Eq. 6 by hand with the method's own masks; far from the patch (beyond two grid cells, where a
    mask value is independent of the masks on the patch) the expectation is E[m M] / p = p * m."""
    h = w = 32
    model = PatchMean(0, 0, 8, 8)
    x = torch.ones(1, 1, h, w)  # m = 1 for the clean image
    options = {"masks": 3000, "grid": 8, "p": 0.5, "seed": 3, "score": "logit"}
    method = create_method("rise", model, options={**RAW, **options})
    maps = method.explain(x, torch.tensor([[0]]), chunk_size=500).maps[None][0, 0]
    masks = method.masks((h, w))(0, 3000)  # (N, H, W)
    scores = masks[:, :8, :8].mean(dim=(1, 2))  # the model on x * M_i
    torch.testing.assert_close(maps, torch.einsum("n,nhw->hw", scores, masks) / (3000 * 0.5))
    assert masks.mean().item() == pytest.approx(0.5, abs=0.02)  # bilinear upsampling keeps E[M] = p
    far = maps[16:, 16:]
    assert far.mean().item() == pytest.approx(0.5, abs=0.03)
    assert maps[:8, :8].mean() > far.mean() + 0.05
    peak = int(maps.argmax())
    assert peak // w < 8 and peak % w < 8


def test_kernel_shap_and_lime_recover_a_linear_model_over_slic_superpixels():
    """f(x) = beta . (superpixel means) + c with fill = raw 0.5: filling superpixel i changes the score by
    beta_i (m_i - g_i), so its Shapley value, and LIME's coefficient without a penalty, is exactly that."""
    torch.manual_seed(0)
    coarse = nn.functional.interpolate(torch.rand(1, 3, 4, 4), size=(24, 24), mode="bilinear")
    raw = (coarse + 0.05 * torch.rand(1, 3, 24, 24)).clamp(0, 1)  # regions for SLIC, some texture
    lo, hi = torch.tensor([-1.0, -2.0, 0.5]), torch.tensor([1.0, 2.0, 1.5])  # (x - lo) / (hi - lo) = raw
    x = lo.view(1, 3, 1, 1) + raw * (hi - lo).view(1, 3, 1, 1)
    probe = create_method("kernel_shap", nn.Identity(), options={"n_segments": 20})
    labels, (m,) = probe.superpixels(x, (lo, hi))
    assert m >= 8
    beta = torch.randn(3, m)
    model = SegmentLinear(labels, beta, torch.tensor([0.1, -0.2, 0.3]))
    fill = (lo + 0.5 * (hi - lo)).view(1, 3, 1, 1).expand_as(x)
    contribution = model(x) - model(fill.clone())  # f(x) - f(all filled)
    onehot = nn.functional.one_hot(labels[0].flatten(), m).float()  # (HW, M)
    seg_mean = (x - fill).mean(dim=1).flatten() @ onehot / onehot.sum(0)  # (M,) m_i - g_i
    for name, options in (("kernel_shap", {"samples": 60}), ("lime", {"samples": 200, "alpha": 0.0})):
        maps = raw_maps(name, model, x, torch.tensor([[0, 2]]), (lo, hi), fill=0.5, n_segments=20,
                        **options)[0]
        for k, cls in enumerate((0, 2)):
            expected = (beta[cls] * seg_mean)[labels[0]]
            torch.testing.assert_close(maps[k], expected, rtol=1e-4, atol=1e-5)
            if name == "kernel_shap":  # efficiency: the values add up to f(x) - f(fill)
                per_pixel = (beta[cls] * seg_mean).sum()
                torch.testing.assert_close(per_pixel, contribution[0, cls], rtol=1e-4, atol=1e-5)


def test_lime_ridge_penalty_shrinks_the_coefficients():
    labels = grid_labels(12, 12, 9)[None]
    beta = torch.tensor([[3.0, -2.0, 1.0, 0.5, -1.5, 2.5, -0.5, 1.0, 2.0]])
    model = SegmentLinear(labels, beta, torch.zeros(1))
    x = torch.ones(1, 1, 12, 12)
    options = {"samples": 300, "segments": "grid", "n_segments": 9}
    exact = raw_maps("lime", model, x, torch.tensor([[0]]), alpha=0.0, **options)
    ridge = raw_maps("lime", model, x, torch.tensor([[0]]), alpha=10.0, **options)
    torch.testing.assert_close(exact[0, 0], beta[0][labels[0]], rtol=1e-4, atol=1e-5)
    assert ridge.abs().sum() < 0.9 * exact.abs().sum()
    assert torch.corrcoef(torch.stack([ridge.flatten(), exact.flatten()]))[0, 1] > 0.99


class Interactions(nn.Module):
    """A nonlinear score of the four quadrant means q: q0 q1 + relu(q2 - q3) + q0 (logit 0)."""

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        q = [x[:, :, i * h : (i + 1) * h, j * w : (j + 1) * w].mean(dim=(1, 2, 3))
             for i in (0, 1) for j in (0, 1)]
        s = q[0] * q[1] + torch.relu(q[2] - q[3]) + q[0]
        return torch.stack([s, -s], dim=1)


def test_kernel_shap_converges_to_brute_force_shapley_values():
    """Four superpixels (a 2 x 2 grid), a model with interactions: the Shapley values by enumerating all
    16 coalitions with their factorial weights, against Kernel SHAP with 4,000 samples."""
    model = Interactions()
    x = torch.tensor([1.0, 2.0, 3.0, 0.5]).view(1, 1, 2, 2).repeat_interleave(4, 2).repeat_interleave(4, 3)
    labels = grid_labels(8, 8, 4)

    def value(coalition: tuple[int, ...]) -> float:
        keep = torch.zeros(8, 8)
        for i in coalition:
            keep[labels == i] = 1
        return float(model(x * keep)[0, 0])

    exact = torch.zeros(4)
    for i in range(4):
        others = [j for j in range(4) if j != i]
        for size in range(4):
            for s in itertools.combinations(others, size):
                weight = math.factorial(size) * math.factorial(3 - size) / math.factorial(4)
                exact[i] += weight * (value((*s, i)) - value(s))
    maps = raw_maps("kernel_shap", model, x, torch.tensor([[0]]), segments="grid", n_segments=4,
                    samples=4000)[0, 0]
    estimate = torch.stack([maps[labels == i][0] for i in range(4)])
    torch.testing.assert_close(estimate.sum(), exact.sum(), rtol=1e-5, atol=1e-5)  # efficiency, exactly
    torch.testing.assert_close(estimate, exact, rtol=0, atol=0.03 * float(exact.abs().max()))


def test_feature_ablation_is_leave_one_out_by_hand_and_kernel_shap_is_efficient():
    model, x = small_cnn(), images(2)
    options = {"segments": "grid", "n_segments": 6}
    ablation = create_method("feature_ablation", model, options={**RAW, **options})
    out = ablation.explain(x, TopK(2))
    labels = grid_labels(12, 14, 6)
    with torch.no_grad():
        clean = model(x).gather(1, out.targets)  # (B, K)
        for i in range(int(labels.max()) + 1):
            dropped = model(x * (labels != i)).gather(1, out.targets)
            torch.testing.assert_close(out.maps[None][:, :, labels == i][..., 0], clean - dropped)
        empty = model(torch.zeros_like(x)).gather(1, out.targets)
    shap = create_method("kernel_shap", model, options={**RAW, **options, "samples": 30}).explain(x, TopK(2))
    per_segment = torch.stack([shap.maps[None][:, :, labels == i][..., 0] for i in range(6)], dim=-1)
    torch.testing.assert_close(per_segment.sum(-1), clean - empty, rtol=1e-4, atol=1e-5)


# --- fills, scores, options ------------------------------------------------------------------------------


def test_fill_values_follow_the_input_range():
    method = create_method("occlusion", nn.Identity(), options={"fill": "black"})
    x = images(2)
    lo, hi = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(method.fill_values(x, (lo, hi)), lo.view(1, 3, 1, 1).expand_as(x))
    method.opts["fill"] = 0.25
    torch.testing.assert_close(method.fill_values(x, (lo, hi)), (lo + 0.25 * (hi - lo)).view(1, 3, 1, 1)
                               .expand_as(x))
    method.opts["fill"] = "mean"
    assert torch.equal(method.fill_values(x, (lo, hi)), torch.zeros_like(x))
    method.opts["fill"] = "blur"
    assert method.fill_values(x, None).std() < x.std() / 2


def test_probability_score_is_the_softmax_of_the_target():
    model = PatchMean(0, 0, 4, 4)
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 3
    maps = create_method("occlusion", model, options={**RAW, "score": "probability", "window": 4,
                                                      "stride": 4}).explain(x, torch.tensor([[0]])).maps[None]
    with torch.no_grad():
        occluded = x.clone()
        occluded[..., :4, :4] = 0
        drop = model(x).softmax(1)[0, 0] - model(occluded).softmax(1)[0, 0]
    torch.testing.assert_close(maps[0, 0, :4, :4], drop.expand(4, 4))
    assert (maps[0, 0, 4:] == 0).all()


@pytest.mark.parametrize("name, options, key", [
    ("occlusion", {"fill": "grey"}, "fill"), ("occlusion", {"fill": 1.5}, "fill"),
    ("occlusion", {"fill": True}, "fill"), ("occlusion", {"window": [3]}, "window"),
    ("occlusion", {"window": 0}, "window"), ("occlusion", {"window": 4, "stride": [2, 5]}, "stride"),
    ("occlusion", {"score": "prob"}, "score"), ("rise", {"p": 0.0}, "p"), ("rise", {"masks": 0}, "masks"),
    ("lime", {"segments": "quickshift"}, "segments"), ("lime", {"compactness": 0.0}, "compactness"),
    ("kernel_shap", {"percentile_clip": 101.0}, "percentile_clip"), ("lime", {"sample": 10}, "sample"),
])
def test_bad_options_name_the_key(name, options, key):
    with pytest.raises(ConfigError) as err:
        create_method(name, nn.Identity(), options=options)
    assert err.value.key == f"methods[0].options.{key}"


def test_slic_without_scikit_image_is_a_config_error(monkeypatch):
    from xaicli.methods.perturbation import _superpixels

    monkeypatch.setattr(_superpixels, "slic_available", lambda: False)
    with pytest.raises(ConfigError, match="slic needs scikit-image .* segments: grid"):
        create_method("lime", nn.Identity())
    create_method("lime", nn.Identity(), options={"segments": "grid"})


def test_grid_labels_are_close_to_square_cells():
    labels = grid_labels(28, 28, 50)
    assert int(labels.max()) + 1 == 49 and labels[0, :4].unique().numel() == 1
    wide = grid_labels(10, 40, 16)
    counts = torch.bincount(wide.flatten())
    assert len(counts) == 16 and (wide[:, 0] != wide[:, -1]).all()
    assert counts.max() - counts.min() <= 10  # cell sizes differ by at most one row or column
    assert grid_labels(3, 3, 50).unique().numel() == 9  # never more cells than pixels


def test_slic_follows_the_image_and_gray_is_clustered_like_colour():
    raw = torch.zeros(1, 1, 24, 24)
    raw[..., 6:18, 6:18] = 1.0  # a bright square on black
    unit = (torch.tensor([0.0]), torch.tensor([1.0]))
    sharp = create_method("lime", nn.Identity(), options={"n_segments": 16, "slic_sigma": 0.0})
    labels, (m,) = sharp.superpixels(raw, unit)
    assert m > 4  # not the single segment scikit-image gives a [0, 1] gray image at compactness 10
    inside, outside = labels[0][raw[0, 0] == 1].unique(), labels[0][raw[0, 0] == 0].unique()
    assert not set(inside.tolist()) & set(outside.tolist())  # no superpixel crosses the square's edge
    colour, _ = sharp.superpixels(raw.expand(1, 3, 24, 24), (torch.zeros(3), torch.ones(3)))
    assert torch.equal(colour, labels)
    noise = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    smoothed = create_method("lime", nn.Identity(), options={"n_segments": 16})  # slic_sigma 1
    # iid noise: without smoothing SLIC's clusters fragment and its connectivity step merges them away
    assert smoothed.superpixels(noise, None)[1][0] > 4 >= sharp.superpixels(noise, None)[1][0]


# --- invariants over the family ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", PERTURBATION)
def test_batch_of_n_equals_n_batches_of_one_and_chunked_equals_unchunked(name):
    model, x = small_cnn(), images(3)
    method = create_method(name, model, options=cheap(name))
    batch = method.explain(x, TopK(2), chunk_size=10_000)
    chunked = method.explain(x, TopK(2), chunk_size=7)
    torch.testing.assert_close(chunked.maps[None], batch.maps[None], rtol=1e-5, atol=1e-6)
    for i in range(3):
        single = method.explain(x[i : i + 1], TopK(2), chunk_size=5)
        assert torch.equal(single.targets, batch.targets[i : i + 1])
        torch.testing.assert_close(single.maps[None], batch.maps[None][i : i + 1], rtol=1e-5, atol=1e-6)
        if batch.segments is not None:
            assert torch.equal(single.segments, batch.segments[i : i + 1])
    assert (batch.segments is not None) == (name in SUPERPIXEL)


@pytest.mark.parametrize("name", [n for n in PERTURBATION if "seed" in create_method(n, nn.Identity()).opts])
def test_seeds_reproduce_and_differ(name):
    model, x = small_cnn(), images(2)
    first = create_method(name, model, options=cheap(name, seed=1)).explain(x, TopK(1)).maps[None]
    again = create_method(name, model, options=cheap(name, seed=1)).explain(x, TopK(1)).maps[None]
    other = create_method(name, model, options=cheap(name, seed=2)).explain(x, TopK(1)).maps[None]
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


class CountingModel(nn.Module):
    """Counts the model inputs (rows) it is called on."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += x.shape[0]
        return self.inner(x)


@pytest.mark.parametrize("name, per_image", [
    ("occlusion", 5 * 6), ("rise", 64), ("feature_ablation", 9), ("lime", None), ("kernel_shap", None)])
def test_forward_passes_are_the_documented_cost_and_top_k_shares_them(name, per_image):
    """Model inputs per image, as each method's docstring states, plus the batch's clean forward pass;
    the same for 1 and 3 targets. Occlusion on 12 x 14, window 4, stride 2: (ceil(8/2) + 1) x
    (ceil(10/2) + 1) positions; feature ablation on a 3 x 3 grid; LIME and Kernel SHAP (48 samples, the
    latter plus the all-filled input) run each distinct coalition once - with 9 superpixels many repeat."""
    x = images(2)
    method = create_method(name, nn.Identity(), options=cheap(name))
    if per_image is None:
        drawn = method.coalitions(9)
        per_image = len(drawn.unique(dim=0))
        assert per_image < len(drawn) == 48 + (name == "kernel_shap")
    for k in (1, 3):
        model = CountingModel(small_cnn())
        create_method(name, model, options=cheap(name)).explain(x, TopK(k))
        assert model.rows == 2 + 2 * per_image, (name, k, model.rows)


@pytest.mark.parametrize("name", ["lime", "kernel_shap"])
def test_repeated_coalitions_run_once_and_weigh_their_multiplicity(name, monkeypatch):
    """Distinct coalitions weighted by their multiplicity give the maps of one forward pass and one
    regression row per draw (``distinct_coalitions`` replaced by every draw with weight 1)."""
    model, x = small_cnn(), images(1)
    method = create_method(name, model, options={**RAW, **cheap(name)})
    out = method.explain(x, TopK(2))
    repeated = method.coalitions(9)
    monkeypatch.setattr(method, "distinct_coalitions",
                        lambda m: (method.coalitions(m), torch.ones(len(method.coalitions(m)))))
    every_draw = method.explain(x, TopK(2))
    assert len(repeated.unique(dim=0)) < len(repeated)
    torch.testing.assert_close(out.maps[None], every_draw.maps[None], rtol=1e-4, atol=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated in recent torch
def test_a_traced_model_gives_the_same_maps_as_the_eager_one():
    model, x = small_cnn(), images(2)
    traced = torch.jit.trace(model, x[:1])
    for name in ("occlusion", "lime"):
        eager = create_method(name, model, options=cheap(name)).explain(x, TopK(2)).maps[None]
        script = create_method(name, traced, options=cheap(name)).explain(x, TopK(2)).maps[None]
        torch.testing.assert_close(script, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("builder, channels, size, patch", [("tiny_torchvision_vit", 3, 12, 4),
                                                             ("tiny_demo_vit", 1, 28, 7)])
def test_occlusion_on_a_vision_transformer_equals_brute_force(builder, channels, size, patch):
    """Perturbation methods only call the model, so a vision transformer (torchvision's
    nn.MultiheadAttention, the demo ViT's timm-style attention) is explained like a CNN: with the window
    and stride equal to the patch size, each patch's map value is the logit drop when it alone is
    filled with 0 (fill: mean, in normalised space), for both top-2 targets, computed here by hand."""
    import tests.tiny_vit as tiny_vit

    model = getattr(tiny_vit, builder)()
    x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        clean = model(x)
    top2 = clean.topk(2, dim=1).indices
    out = create_method("occlusion", model, options={**RAW, "window": patch, "stride": patch}).explain(
        x, TopK(2))
    maps = out.maps[None]  # (B, K, H, W)
    expected = torch.zeros(2, 2, size, size)
    for top, left in itertools.product(range(0, size, patch), repeat=2):
        occluded = x.clone()
        occluded[:, :, top : top + patch, left : left + patch] = 0
        with torch.no_grad():
            drop = clean - model(occluded)
        expected[:, :, top : top + patch, left : left + patch] = drop.gather(1, top2)[:, :, None, None]
    assert torch.equal(out.targets, top2)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5)
    assert expected.abs().amax() > 1e-3  # the transformer's logits do depend on the patches


# --- in a run: manifest, run.json, overlays with superpixel boundaries --------------------------------------


def test_explain_run_records_seeds_and_superpixels_and_draws_boundaries(cli, tmp_path, write_config,
                                                                       tiny_config, image_tree):
    import json

    import numpy as np
    from PIL import Image

    tiny_config["methods"] = [
        {"name": "lime", "options": {"segments": "grid", "n_segments": 12, "samples": 24, "seed": 7}},
        {"name": "rise", "options": {"masks": 24, "seed": 5}},
        {"name": "kernel_shap", "options": {"samples": 24}},  # SLIC on the images
    ]
    tiny_config["output"] = {"segments": True, "overlay_scale": 2}
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == 0, res
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 3 * 2 and all(r["status"] == "ok" for r in rows)
    run = json.loads((out / "run.json").read_text())
    options = {m["name"]: m["options"] for m in run["config"]["methods"]}
    assert [options[m]["seed"] for m in ("lime", "rise", "kernel_shap")] == [7, 5, 0]
    labels = grid_labels(16, 20, 12).repeat_interleave(2, 0).repeat_interleave(2, 1).numpy()  # overlay scale
    edge = np.zeros_like(labels, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    for row in rows:
        overlay = np.asarray(Image.open(out / row["overlay"]))
        yellow = (overlay == (255, 255, 0)).all(axis=-1)
        assert np.load(out / row["map"]).min() >= (0 if row["method"] == "rise" else -1)
        if row["method"] == "lime":
            assert row["superpixels"] == 12 and 0 <= row["lime_r2"] <= 1
            assert np.array_equal(yellow, edge)
        elif row["method"] == "kernel_shap":
            assert row["superpixels"] >= 1 and yellow.any() == (row["superpixels"] > 1)
        else:
            assert "superpixels" not in row and not yellow.any()  # RISE has no superpixels
