"""Parity of the metrics with the reference implementations, on the bundled Fashion-MNIST model.

* the RISE authors' ``CausalMetric`` (deletion / insertion), transcribed below from their
  ``evaluation.py`` (github.com/eclique/RISE): one image, one step at a time;
* Quantus 0.6: ``PixelFlipping``, ``Sparseness``, ``PointingGame``, ``RelevanceMassAccuracy``, ``MPRT``
  (the whole cascade, on the same randomised models) and its similarity functions;
* pytorch-grad-cam's ROAD (``NoisyLinearImputer(noise=0)``, ``ClassifierOutputSoftmaxTarget``);
* Captum's ``sensitivity_max`` fed the same perturbations;
* scikit-image's ``structural_similarity`` and SciPy's ``spearmanr``.

Each reference is skipped cleanly when it is not installed (``pip install -e ".[parity]"``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xaicli.metrics import MapSource, MetricInput, create_metric, evaluate_maps
from xaicli.metrics.base import per_image_uniform
from xaicli.metrics.similarity import spearman, ssim

pytestmark = [pytest.mark.parity, pytest.mark.usefixtures("torch_single_thread")]


@pytest.fixture(scope="module")
def demo():
    """The bundled model, 6 sample images (normalised), their top-1 targets and Grad-CAM maps."""
    from xaicli.config import config_from_dict
    from xaicli.engine import Explainer, explain_images
    from xaicli.engine.discover import discover_images

    explainer = Explainer(config_from_dict({"methods": [{"name": "gradcam", "layers": ["features.2.relu"]}],
                                            "targets": {"topk": 1}}))
    items = discover_images(["sample_images"])[::9][:6]
    images = torch.stack([explainer.pre.load(str(it.path)) for it in items])
    result = explain_images(explainer, images)
    x = explainer.normalise(images).contiguous()
    return explainer.loaded.model, x, result.targets, result.maps[("gradcam", "features.2.relu")]


def random_maps(n: int, size: int = 28, seed: int = 0) -> Tensor:
    """Continuous random maps (no ties: every reference orders ties differently)."""
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


# --- the RISE authors' CausalMetric, transcribed ---------------------------------------------------------


def gkern(klen: int, nsig: float) -> Tensor:
    """RISE ``evaluation.py``: a Gaussian kernel from ``gaussian_filter`` of a Dirac delta (1 channel)."""
    from scipy.ndimage import gaussian_filter

    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    return torch.from_numpy(k.astype("float32"))[None, None]


def rise_auc(arr: np.ndarray) -> float:
    """RISE ``evaluation.py``: normalised area under the curve."""
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


class CausalMetric:
    """RISE ``evaluation.py``'s ``CausalMetric.single_run`` (mode 'del' / 'ins'), for one image, with the
    model's softmax output; channels generalised from 3 to C and ``salient_order`` the stable sort of
    the negated map (the issue's tie rule; maps here have no ties)."""

    def __init__(self, model: nn.Module, mode: str, step: int, substrate_fn):
        self.model, self.mode, self.step, self.substrate_fn = model, mode, step, substrate_fn

    def single_run(self, img_tensor: Tensor, explanation: np.ndarray, target: int) -> np.ndarray:
        _, c, h, w = img_tensor.shape
        hw = h * w
        n_steps = (hw + self.step - 1) // self.step
        if self.mode == "del":
            start, finish = img_tensor.clone(), self.substrate_fn(img_tensor)
        else:
            start, finish = self.substrate_fn(img_tensor), img_tensor.clone()
        scores = np.empty(n_steps + 1)
        salient_order = np.argsort(-explanation.reshape(-1, hw), axis=1, kind="stable")
        for i in range(n_steps + 1):
            with torch.no_grad():
                pred = torch.softmax(self.model(start), dim=1)
            scores[i] = pred[0, target]
            if i < n_steps:
                coords = salient_order[:, self.step * i : self.step * (i + 1)]
                start.numpy().reshape(1, c, hw)[0, :, coords] = finish.numpy().reshape(1, c, hw)[0, :, coords]
        return scores


@pytest.mark.parametrize("mode", ["del", "ins"])
def test_deletion_and_insertion_equal_the_rise_authors_loop(demo, mode: str):
    pytest.importorskip("scipy")
    model, x, targets, _ = demo
    maps = random_maps(3)
    kern = gkern(11, 5)
    blur = lambda t: F.conv2d(t, kern, padding=11 // 2)  # noqa: E731  (RISE: one channel here)
    substrate = torch.zeros_like if mode == "del" else blur
    name = "deletion" if mode == "del" else "insertion"
    ours = evaluate_maps(model, x[:3], maps, targets[:3], [name], options={name: {"steps": 50}})[name]
    metric = CausalMetric(model, mode, step=16, substrate_fn=substrate)  # ceil(784 / 50) = 16
    for i in range(3):
        scores = metric.single_run(x[i : i + 1].clone(), maps[i, 0].numpy(), int(targets[i, 0]))
        np.testing.assert_allclose(ours.fields["curve"][i, 0].numpy(), scores, atol=1e-5)
        assert ours.values[i, 0].item() == pytest.approx(rise_auc(scores), abs=1e-5)


# --- Quantus ---------------------------------------------------------------------------------------------


def test_deletion_equals_quantus_pixel_flipping(demo):
    quantus = pytest.importorskip("quantus")
    model, x, targets, _ = demo
    maps = random_maps(4, seed=1)
    ours = evaluate_maps(model, x[:4], maps, targets[:4], ["deletion"],
                         options={"deletion": {"steps": 49}})["deletion"]  # step 16 = 784 / 49
    metric = quantus.PixelFlipping(features_in_step=16, perturb_baseline=0.0, disable_warnings=True)
    theirs = np.asarray(metric(model=model, x_batch=x[:4].numpy(), y_batch=targets[:4, 0].numpy(),
                               a_batch=maps.numpy(), device="cpu"))
    # Quantus records the probability after each step (no step 0)
    np.testing.assert_allclose(ours.fields["curve"][:, 0, 1:].numpy(), theirs, atol=1e-5)


def test_sparseness_pointing_game_relevance_mass_equal_quantus(demo):
    quantus = pytest.importorskip("quantus")
    model, x, targets, cams = demo
    masks = torch.zeros(6, 28, 28, dtype=torch.bool)
    masks[:, 6:20, 8:22] = True
    masks[1] = False
    masks[1, 0:5, 0:5] = True
    ours = evaluate_maps(model, x, cams, targets, ["sparseness", "pointing_game", "relevance_mass"],
                         masks=masks, options={"pointing_game": {"tolerance": 0.0}})
    kw = dict(model=model, x_batch=x.numpy(), y_batch=targets[:, 0].numpy(), a_batch=cams.numpy(),
              s_batch=masks[:, None].numpy().astype(np.float32), device="cpu")
    np.testing.assert_allclose(ours["sparseness"].values[:, 0].numpy(),
                               quantus.Sparseness(disable_warnings=True)(**kw), atol=1e-5)
    np.testing.assert_array_equal(ours["pointing_game"].values[:, 0].numpy(),
                                  np.asarray(quantus.PointingGame(disable_warnings=True)(**kw), dtype=float))
    np.testing.assert_allclose(ours["relevance_mass"].values[:, 0].numpy(),
                               quantus.RelevanceMassAccuracy(disable_warnings=True)(**kw), atol=1e-6)


def test_mprt_equals_quantus_on_the_same_randomised_models(demo):
    """Quantus' whole cascade (``layer_order: top_down``), with our Grad-CAM as its ``explain_func``:
    Quantus seeds every layer with ``seed + 1``, so our seed 42 is its seed 41."""
    quantus = pytest.importorskip("quantus")
    model, x, targets, cams = demo
    source = MapSource("gradcam", "features.2.relu", {})
    ours = create_metric("mprt", {"seed": 42})(MetricInput(model, x, cams, targets, source=source))

    def explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_kw) -> np.ndarray:
        t = torch.as_tensor(np.asarray(targets)).view(-1, 1)
        return source.explain(model, torch.as_tensor(inputs), t).numpy()

    metric = quantus.MPRT(seed=41, disable_warnings=True)
    scores = metric(model=model, x_batch=x.numpy(), y_batch=targets[:, 0].numpy(), a_batch=cams.numpy(),
                    explain_func=explain, device="cpu")
    layers = [k for k in scores if k != "original"]
    assert layers == ours.stages
    theirs = np.array([scores[k] for k in layers]).T  # (images, stages)
    np.testing.assert_allclose(ours.values[:, 0].numpy(), theirs, atol=1e-5)


def test_similarities_equal_quantus_scipy_and_skimage():
    quantus = pytest.importorskip("quantus")
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(0)
    a = torch.rand(5, 28, 28, generator=gen)
    b = (a + 0.3 * torch.rand(5, 28, 28, generator=gen)).round(decimals=1)  # ties
    np.testing.assert_allclose(spearman(a, b).numpy(),
                               quantus.similarity_func.correlation_spearman(
                                   a.flatten(1).numpy(), b.flatten(1).numpy(), batched=True), atol=1e-10)
    flipped = b.flip(-1)
    expected = [spearmanr(u.ravel(), v.ravel())[0] for u, v in zip(b.numpy(), flipped.numpy(), strict=True)]
    np.testing.assert_allclose(spearman(b, flipped).numpy(), expected, atol=1e-10)
    ref = [structural_similarity(u, v, data_range=1.0) for u, v in zip(a.double().numpy(), b.double().numpy(),
                                                                       strict=True)]
    np.testing.assert_allclose(ssim(a, b).numpy(), ref, atol=1e-10)


# --- pytorch-grad-cam's ROAD -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["road_morf", "road_lerf"])
def test_road_equals_pytorch_grad_cam_without_noise(demo, name: str):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        AveragerAcrossThresholds,
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, x, targets, cams = demo
    remove = RemoveMostRelevantFirst if name == "road_morf" else RemoveLeastRelevantFirst
    reference = AveragerAcrossThresholds(
        lambda p: PerturbationConfidenceMetric(remove(p, NoisyLinearImputer(noise=0))))
    theirs = reference(x, cams[:, 0].numpy(), [ClassifierOutputSoftmaxTarget(int(t)) for t in targets[:, 0]],
                       model)
    ours = evaluate_maps(model, x, cams, targets, [name], options={name: {"noise": 0.0}})[name]
    np.testing.assert_allclose(ours.values[:, 0].numpy(), theirs, atol=1e-3)


# --- Captum's sensitivity_max ----------------------------------------------------------------------------


def test_max_sensitivity_equals_captum_with_the_same_perturbations(demo):
    captum_metrics = pytest.importorskip("captum.metrics")
    model, x, targets, cams = demo
    source = MapSource("saliency", None, {})
    maps = source.explain(model, x, targets)
    opts = {"samples": 5, "radius": 0.05, "seed": 3}
    ids = torch.arange(6)
    metric = create_metric("max_sensitivity", opts)
    ours = metric(MetricInput(model, x, maps, targets, source=source, ids=ids))
    noise = per_image_uniform(ids, 3, (5, *x.shape[1:]), x.device, -0.05, 0.05).flatten(0, 1)

    def perturb(inputs: Tensor, radius: float) -> Tensor:
        assert inputs.shape[0] == noise.shape[0]  # image-major repeats, as ours
        return inputs + noise

    def explanation(inputs: Tensor | tuple[Tensor], target: Tensor) -> tuple[Tensor]:
        # Captum passes a tuple first and a tensor later, and iterates over what this returns: a tuple
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs
        return (source.explain(model, inputs, target.view(-1, 1)),)  # ((N, 1, H, W),)

    theirs = captum_metrics.sensitivity_max(explanation, x, perturb_func=perturb, perturb_radius=0.05,
                                            n_perturb_samples=5, target=targets[:, 0])
    np.testing.assert_allclose(ours.values[:, 0].numpy(), theirs.numpy(), atol=1e-5)
