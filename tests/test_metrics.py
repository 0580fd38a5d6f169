"""The evaluation metrics (``xaicli.metrics``) against analytic cases and invariants.

Hand-built models whose output is a known function of a pixel region give known deletion / insertion
curves; maps that are exactly the mask give pointing game and energy 1; a constant map has Gini 0; a
plane is its own linear imputation; a map that does not depend on the weights survives randomisation.
Parity with the reference implementations is in ``test_parity_metrics.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from xaicli.errors import ConfigError, UnknownNameError
from xaicli.metrics import MapSource, MetricInput, available_metrics, create_metric, evaluate_maps, get_metric
from xaicli.metrics._causal import causal_auc, pixel_ranks, rise_kernel, schedule
from xaicli.metrics._road import linear_impute, removal_masks
from xaicli.metrics.mprt import randomisation_stages
from xaicli.metrics.random_logit import other_classes
from xaicli.metrics.similarity import average_ranks, spearman, ssim
from xaicli.metrics.sparseness import gini

pytestmark = pytest.mark.usefixtures("torch_single_thread")


class PatchModel(nn.Module):
    """Two classes; logit 0 = ``scale`` * mean of channel 0 over a patch, logit 1 = 0. So the
    probability of class 0 is ``sigmoid(scale * patch mean)``: a known function of a pixel region."""

    def __init__(self, patch: tuple[slice, slice], scale: float = 4.0):
        super().__init__()
        self.patch, self.scale = patch, scale

    def forward(self, x: Tensor) -> Tensor:
        m = x[:, 0, self.patch[0], self.patch[1]].mean(dim=(1, 2))
        return torch.stack([self.scale * m, torch.zeros_like(m)], dim=1)


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


# --- deletion and insertion ------------------------------------------------------------------------------


def test_schedule_is_the_rise_authors():
    assert schedule(28, 28, 100) == (8, 98)  # step = ceil(784 / 100), n = ceil(784 / 8)
    assert schedule(224, 224, 100) == (502, 100)
    assert schedule(8, 8, 16) == (4, 16)
    assert schedule(3, 3, 100) == (1, 9)


def test_ranks_break_ties_by_ascending_pixel_index():
    m = torch.tensor([[0.5, 1.0], [0.5, 0.2]])[None, None]
    assert pixel_ranks(m).view(-1).tolist() == [1, 0, 2, 3]


def test_deletion_curve_of_a_patch_model_is_known():
    """8x8 input, patch = the 4x4 top-left block, x = 1 there and 0.5 elsewhere; map = the patch.
    Deleting (mean substrate: 0) 4 pixels a step empties the patch in 4 steps, then the rest."""
    patch = (slice(0, 4), slice(0, 4))
    model = PatchModel(patch)
    x = torch.full((1, 1, 8, 8), 0.5)
    x[0, 0, :4, :4] = 1.0
    cam = torch.zeros(1, 1, 8, 8)
    cam[0, 0, :4, :4] = 1.0
    result = evaluate_maps(model, x, cam, torch.tensor([[0]]), ["deletion"],
                           options={"deletion": {"steps": 16}})["deletion"]
    # the patch's 16 pixels have ranks 0..15 (ties: ascending index), 4 per step
    expected = [sigmoid(4.0 * max(0, 16 - 4 * i) / 16) for i in range(17)]
    curve = result.fields["curve"][0, 0].tolist()
    assert curve == pytest.approx(expected, abs=1e-6)
    auc = (sum(expected) - expected[0] / 2 - expected[-1] / 2) / 16
    assert result.values[0, 0].item() == pytest.approx(auc, abs=1e-6)


def test_a_faithful_map_deletes_better_than_its_reverse():
    patch = (slice(2, 6), slice(2, 6))
    model = PatchModel(patch)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.5
    good = torch.zeros(3, 1, 8, 8)
    good[..., 2:6, 2:6] = 1.0
    good = good + 0.01 * torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = evaluate_maps(model, x, torch.cat([good, 1 - good], 1), torch.zeros(3, 2, dtype=torch.long),
                         ["deletion", "insertion"])
    assert (ours["deletion"].values[:, 0] < ours["deletion"].values[:, 1]).all()
    assert (ours["insertion"].values[:, 0] > ours["insertion"].values[:, 1]).all()


def test_insertion_curve_of_a_patch_model_is_known():
    """Insertion starts from the RISE blur of x (computed here with SciPy) and restores the patch first."""
    ndimage = pytest.importorskip("scipy.ndimage")
    patch = (slice(0, 4), slice(0, 4))
    model = PatchModel(patch)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((1, 1, 8, 8)).astype(np.float32))
    cam = torch.zeros(1, 1, 8, 8)
    cam[0, 0, :4, :4] = torch.linspace(1.0, 0.5, 16).view(4, 4)  # no ties inside the patch
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    kernel = ndimage.gaussian_filter(delta, 5)
    blurred = ndimage.convolve(x[0, 0].double().numpy(), kernel, mode="constant")
    result = evaluate_maps(model, x, cam, torch.tensor([[0]]), ["insertion"],
                           options={"insertion": {"steps": 16}})["insertion"]
    expected = []
    order = np.argsort(-cam[0, 0].numpy().ravel(), kind="stable")
    for i in range(17):
        img = blurred.ravel().copy()
        img[order[: 4 * i]] = x[0, 0].double().numpy().ravel()[order[: 4 * i]]
        expected.append(sigmoid(4.0 * img.reshape(8, 8)[:4, :4].mean()))
    assert result.fields["curve"][0, 0].tolist() == pytest.approx(expected, abs=1e-5)


def test_rise_kernel_is_scipy_gaussian_filter_of_a_delta():
    ndimage = pytest.importorskip("scipy.ndimage")
    for klen, sigma in ((11, 5.0), (7, 1.5), (5, 10.0)):
        delta = np.zeros((klen, klen))
        delta[klen // 2, klen // 2] = 1
        np.testing.assert_allclose(rise_kernel(klen, sigma).numpy(), ndimage.gaussian_filter(delta, sigma),
                                   atol=1e-7)


def test_deletion_substrates():
    patch = (slice(0, 2), slice(0, 2))
    model = PatchModel(patch)
    x = torch.ones(1, 1, 4, 4)
    cam = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    lo, hi = torch.tensor([-2.0]), torch.tensor([3.0])
    black = evaluate_maps(model, x, cam, torch.tensor([[0]]), ["deletion"], input_range=(lo, hi),
                          options={"deletion": {"substrate": "black"}})["deletion"]
    assert black.fields["curve"][0, 0, -1].item() == pytest.approx(sigmoid(4.0 * -2.0), abs=1e-6)
    mean = evaluate_maps(model, x, cam, torch.tensor([[0]]), ["deletion"])["deletion"]
    assert mean.fields["curve"][0, 0, -1].item() == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="input range"):
        evaluate_maps(model, x, cam, torch.tensor([[0]]), ["deletion"],
                      options={"deletion": {"substrate": "black"}})


def test_causal_auc_is_the_normalised_trapezoid():
    curve = torch.tensor([1.0, 0.5, 0.25, 0.0])
    assert causal_auc(curve).item() == pytest.approx(np.trapezoid(curve.numpy()) / 3)


# --- localisation ----------------------------------------------------------------------------------------


def _masks() -> Tensor:
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, 4:8, 4:8] = True
    masks[1, 10:14, 2:6] = True
    return masks


def test_a_map_that_is_the_mask_scores_one():
    masks = _masks()
    maps = masks[:, None].float()
    out = evaluate_maps(nn.Identity(), torch.zeros(2, 1, 16, 16), maps, torch.zeros(2, 1, dtype=torch.long),
                        ["pointing_game", "energy_pointing_game", "relevance_mass"], masks=masks)
    for name in out:
        assert out[name].values.tolist() == [[1.0], [1.0]], name


def test_pointing_game_misses_and_tolerance():
    masks = _masks()[:1]
    maps = torch.zeros(1, 1, 16, 16)
    maps[0, 0, 4, 11] = 1.0  # 4 pixels right of the object's last column (x = 7)
    opts = {"tolerance": 0.0}

    def hit(options: dict) -> float:
        target = torch.zeros(1, 1, dtype=torch.long)
        out = evaluate_maps(nn.Identity(), torch.zeros(1, 1, 16, 16), maps, target, ["pointing_game"],
                            masks=masks, options={"pointing_game": options})
        return out["pointing_game"].values.item()

    assert hit(opts) == 0.0
    # 16 px input: tolerance t px at 16 px reference -> t px
    assert hit({"tolerance": 4.0, "reference_size": 16}) == 1.0
    assert hit({"tolerance": 3.0, "reference_size": 16}) == 0.0
    assert hit({"tolerance": 64.0, "reference_size": 256}) == 1.0  # 64 px at 256 -> 4 px at 16


def test_energy_and_relevance_mass_share():
    masks = _masks()[:1]
    maps = torch.zeros(1, 1, 16, 16)
    maps[0, 0, 4:8, 4:8] = 0.5  # 16 px inside, 8 mass
    maps[0, 0, 0, :8] = -1.0  # 8 px outside, signed
    maps[0, 0, 15, :8] = 1.0  # 8 px outside, 8 mass
    out = evaluate_maps(nn.Identity(), torch.zeros(1, 1, 16, 16), maps, torch.zeros(1, 1, dtype=torch.long),
                        ["energy_pointing_game", "relevance_mass"], masks=masks)
    assert out["energy_pointing_game"].values.item() == pytest.approx(8 / 24)  # |map|
    assert out["relevance_mass"].values.item() == pytest.approx(8 / 16)  # positive part only


def test_empty_mask_is_undefined():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    out = evaluate_maps(nn.Identity(), torch.zeros(1, 1, 8, 8), torch.rand(1, 1, 8, 8),
                        torch.zeros(1, 1, dtype=torch.long),
                        ["pointing_game", "energy_pointing_game", "relevance_mass"], masks=masks)
    assert all(math.isnan(r.values.item()) for r in out.values())


def test_localisation_needs_masks():
    with pytest.raises(ValueError, match="masks"):
        evaluate_maps(nn.Identity(), torch.zeros(1, 1, 8, 8), torch.rand(1, 1, 8, 8),
                      torch.zeros(1, 1, dtype=torch.long), ["pointing_game"])


# --- complexity ------------------------------------------------------------------------------------------


def test_gini_analytic_values():
    assert gini(torch.full((1, 100), 0.3)).item() == pytest.approx(0.0, abs=1e-12)
    one_hot = torch.zeros(1, 100)
    one_hot[0, 17] = 2.0
    assert gini(one_hot).item() == pytest.approx(99 / 100)
    assert gini(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).item() == pytest.approx(0.25)  # sum (2i-5) a_i / (4*10)
    assert math.isnan(gini(torch.zeros(1, 10)).item())


def test_sparseness_uses_magnitudes():
    signed = torch.tensor([[-1.0, 1.0], [1.0, -1.0]])[None, None]
    out = evaluate_maps(nn.Identity(), torch.zeros(1, 1, 2, 2), signed, torch.zeros(1, 1, dtype=torch.long),
                        ["sparseness"])
    assert out["sparseness"].values.item() == pytest.approx(0.0, abs=1e-7)


# --- ROAD ------------------------------------------------------------------------------------------------


def test_linear_imputation_reproduces_a_plane():
    """The 8-neighbour weighted mean is exact for linear functions, so a hole that does not touch the
    border is filled with the plane itself (also through the multigrid levels of a 64 px image)."""
    for size in (12, 64):
        ii, jj = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
        plane = (0.3 * ii - 0.2 * jj + 1.0)[None, None].expand(2, 3, -1, -1).contiguous()
        missing = torch.zeros(2, size, size, dtype=torch.bool)
        missing[0, 2:-2, 2:-2] = True
        missing[1, 3 : size // 2, 2:-3] = True
        filled = linear_impute(plane, missing, tol=1e-7)
        assert torch.allclose(filled, plane, atol=1e-3 * size)
        kept = ~missing[:, None].expand_as(plane)
        assert torch.equal(filled[kept], plane[kept])


def test_imputed_pixel_is_the_weighted_mean_of_its_neighbours():
    x = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    missing = torch.zeros(1, 5, 5, dtype=torch.bool)
    missing[0, 2, 2] = True
    w = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])
    expected = (x[0, 0, 1:4, 1:4] * w).sum()
    assert linear_impute(x, missing)[0, 0, 2, 2].item() == pytest.approx(expected.item(), abs=1e-6)
    corner = torch.zeros(1, 5, 5, dtype=torch.bool)
    corner[0, 0, 0] = True  # renormalised by the in-image weights 1/6 + 1/6 + 1/12
    expected = (x[0, 0, 0, 1] / 6 + x[0, 0, 1, 0] / 6 + x[0, 0, 1, 1] / 12) / (5 / 12)
    assert linear_impute(x, corner)[0, 0, 0, 0].item() == pytest.approx(expected.item(), abs=1e-6)


def test_road_removal_masks_follow_the_percentiles():
    maps = torch.arange(100.0).view(1, 10, 10) / 99
    morf = removal_masks(maps, torch.tensor([10.0, 90.0]), True)
    lerf = removal_masks(maps, torch.tensor([10.0, 90.0]), False)
    assert morf[0].flatten(1).sum(1).tolist() == [90, 10]  # not below the p-th percentile
    assert lerf[0].flatten(1).sum(1).tolist() == [90, 10]
    assert morf[0, 1].view(-1)[-10:].all() and lerf[0, 1].view(-1)[:10].all()


def test_road_noise_is_seeded_per_image():
    model = PatchModel((slice(0, 4), slice(0, 4)))
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.zeros(3, 1, dtype=torch.long)

    def road(sl: slice, ids: list[int]) -> Tensor:
        return evaluate_maps(model, x[sl], maps[sl], t[sl], ["road_morf"], ids=torch.tensor(ids)
                             )["road_morf"].values

    whole, one = road(slice(0, 3), [5, 6, 7]), road(slice(1, 2), [6])
    assert torch.allclose(whole[1], one[0], atol=1e-6)
    assert not torch.allclose(road(slice(1, 2), [9]), one)


# --- similarities ----------------------------------------------------------------------------------------


def test_average_ranks_and_spearman():
    assert average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0]])).tolist() == [[3.5, 1.0, 3.5, 2.0]]
    a = torch.rand(4, 50, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(spearman(a, a.exp()), torch.ones(4, dtype=torch.float64))  # monotone: 1
    assert torch.allclose(spearman(a, -a), -torch.ones(4, dtype=torch.float64))
    assert math.isnan(spearman(torch.ones(1, 5), a[:1, :5]).item())


def test_ssim_identity_and_window():
    a = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(a, a), torch.ones(3, dtype=torch.float64))
    assert (ssim(a, 1 - a) < 0.5).all()
    assert torch.isfinite(ssim(a[:, :5, :5], a[:, :5, :5].flip(-1))).all()  # 5x5 map: window 5


# --- randomisation ---------------------------------------------------------------------------------------


class LinearNet(nn.Module):
    def __init__(self, n_in: int = 16, n_out: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(n_in, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


def test_mprt_randomises_a_copy_from_the_output_layer_down():
    from tests.tiny_cnn import make

    model = make()
    names = [n for n, _ in randomisation_stages(model)]
    assert names == ["fc", "features.1.bn", "features.1.conv", "features.0.bn", "features.0.conv"]
    blocks = randomisation_stages(model, ["fc", "features.1"])
    assert [n for n, _ in blocks] == ["fc", "features.1"] and len(blocks[1][1]) == 2
    with pytest.raises(UnknownNameError, match="features.9"):
        randomisation_stages(model, ["features.9"])


def test_mprt_saliency_of_a_linear_model_is_the_randomised_weights():
    """Saliency of a linear model is |W_c| (reduced over the single channel): after the one stage the
    recomputed map is |W'_c| with W' = the layer re-initialised under the seed, independently rebuilt."""
    model = LinearNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([[0, 2], [1, 0]])
    source = MapSource("saliency", None, {"normalise": False, "percentile_clip": 100.0})
    maps = model.fc.weight.abs()[targets].view(2, 2, 4, 4)
    result = create_metric("mprt", {"seed": 7})(MetricInput(model, x, maps, targets, source=source))
    fresh = nn.Linear(16, 3)
    torch.manual_seed(7)
    fresh.reset_parameters()
    expected = fresh.weight.detach().abs()[targets].view(4, 16)
    assert result.stages == ["fc"] and result.values.shape == (2, 2, 1)
    want = spearman(maps.view(4, 16), expected).view(2, 2).float()
    assert torch.allclose(result.values[..., 0], want, atol=1e-6)
    assert torch.allclose(result.fields["ssim"][..., 0],
                          ssim(maps.view(4, 4, 4), expected.view(4, 4, 4)).view(2, 2).float(), atol=1e-6)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # a copy was randomised


def test_mprt_of_a_constant_map_is_undefined():
    """A constant map has no ranking: its Spearman values are NaN at every stage (never a made-up 0)."""
    from tests.tiny_cnn import make

    model = make()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    inp = MetricInput(model, x, torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, dtype=torch.long),
                      source=MapSource("saliency", None, {}))
    result = create_metric("mprt")(inp)
    assert result.values.shape == (2, 1, 5) and torch.isnan(result.values).all()
    assert torch.isfinite(result.fields["ssim"]).all()


def test_random_logit_draws_another_class_uniformly():
    targets = torch.tensor([[0, 1, 2]]).expand(3000, 3)
    ids = torch.arange(3000)
    off = other_classes(targets, ids, 4, seed=1)
    assert (off != targets).all() and ((off >= 0) & (off < 4)).all()
    counts = torch.bincount(off[:, 0], minlength=4)[1:].float()
    assert counts.min() / counts.max() > 0.85  # roughly uniform over the 3 other classes
    assert torch.equal(other_classes(targets[:5], ids[:5], 4, 1), off[:5])  # independent of batching


def test_random_logit_of_class_independent_maps_is_one():
    """Every logit is a positive multiple of the same function: saliency maps (normalised) are the same
    for every class, so the SSIM with the random class's map is 1."""

    class Scaled(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            s = (x**2).sum(dim=(1, 2, 3))
            return s[:, None] * torch.tensor([1.0, 2.0, 3.0])

    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    source = MapSource("saliency", None, {"percentile_clip": 100.0})
    maps = source.explain(Scaled(), x, torch.zeros(2, 1, dtype=torch.long))
    out = create_metric("random_logit")(MetricInput(Scaled(), x, maps, torch.zeros(2, 1, dtype=torch.long),
                                                     source=source))
    assert torch.allclose(out.values, torch.ones(2, 1), atol=1e-6)
    assert (out.fields["random_class"] != 0).all()


def test_max_sensitivity_of_a_constant_gradient_is_zero():
    model = LinearNet().eval()
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    source = MapSource("saliency", None, {"percentile_clip": 100.0})
    targets = torch.tensor([[0], [2]])
    maps = source.explain(model, x, targets)
    metric = create_metric("max_sensitivity", {"radius": 0.5})
    out = metric(MetricInput(model, x, maps, targets, source=source))
    assert torch.allclose(out.values, torch.zeros(2, 1), atol=1e-6)


# --- the registry and the contract of every metric ---------------------------------------------------------


def test_unknown_metric_and_option_errors_name_the_key():
    with pytest.raises(UnknownNameError, match="did you mean: 'deletion'"):
        get_metric("deletoin", key="evaluate.metrics[0]")
    with pytest.raises(ConfigError, match="evaluate.options.deletion.stepz"):
        create_metric("deletion", {"stepz": 3})
    with pytest.raises(ConfigError, match="blur_kernel"):
        create_metric("insertion", {"blur_kernel": 10})
    with pytest.raises(ConfigError, match="percentiles"):
        create_metric("road_morf", {"percentiles": [0, 50]})


@pytest.mark.parametrize("name", list(available_metrics()))
def test_every_metric_documents_itself_and_scores_the_tiny_model(name: str):
    """Contract: paper and summary, values (B, K[, S]) finite or NaN, deterministic, batch-invariant."""
    from tests.tiny_cnn import make

    cls = get_metric(name)
    assert cls.paper and cls.summary and cls.family and cls.__module__.startswith("xaicli.metrics.")
    model = make()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, 16, 16, generator=gen)
    source = MapSource("gradcam", "features.1.bn", {})
    targets = torch.tensor([[0, 1], [2, 0], [1, 2]])
    maps = source.explain(model, x, targets)
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[:, 4:12, 4:12] = True
    options = {"steps": 20} if name in ("deletion", "insertion") else {}

    def run(sl: slice) -> Tensor:
        ids = torch.arange(3)[sl]
        return create_metric(name, options)(MetricInput(model, x[sl], maps[sl], targets[sl], source=source,
                                                        masks=masks[sl], ids=ids, chunk_size=7)).values

    whole = run(slice(0, 3))
    assert whole.shape[:2] == (3, 2) and (whole.dim() == 3) == cls.staged
    assert not torch.isinf(whole).any()
    assert torch.equal(whole.isnan(), run(slice(0, 3)).isnan())
    assert torch.allclose(run(slice(0, 3)), whole, equal_nan=True)  # deterministic
    parts = torch.cat([run(slice(0, 1)), run(slice(1, 3))])
    assert torch.allclose(parts, whole, atol=1e-5, equal_nan=True)  # does not depend on batching
