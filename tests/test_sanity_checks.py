"""The sanity check of Adebayo et al. (NeurIPS 2018) on the bundled Fashion-MNIST model, as measured by
``xaicli.metrics`` (the README's table): under cascading randomisation from the output layer down, the
maps of vanilla gradient, Grad-CAM and integrated gradients decorrelate from the trained model's; guided
backprop's much less. Integrated gradients with a *black* baseline keep a high rank correlation of
|maps| only through the shared zeros of the black background (x - x' = 0 there, under any weights);
their signed maps decorrelate.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from xaicli.config import config_from_dict
from xaicli.engine import Explainer, explain_images
from xaicli.engine.discover import discover_images
from xaicli.metrics import evaluate

pytestmark = pytest.mark.usefixtures("torch_single_thread")

METHODS = [
    {"name": "saliency"},
    {"name": "gradcam", "layers": ["features.2.relu"]},
    {"name": "guided_backprop"},
]


def mprt(methods: list[dict], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean over images of each stage's similarities: {method: (3, stages)} for |maps| Spearman, signed
    Spearman and SSIM."""
    explainer = Explainer(config_from_dict({"methods": methods, "targets": {"topk": 1}}), emit_warnings=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # completeness of 16-step IG is not what is tested here
        result = explain_images(explainer, images)
        scores = evaluate(explainer, images, result, ["mprt"])
    return {method: torch.stack([r.values[:, 0], r.fields["spearman_signed"][:, 0], r.fields["ssim"][:, 0]]
                                ).nanmean(dim=1)
            for (_, method, _), r in scores.items()}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    from xaicli.engine.preprocess import Preprocess
    from xaicli.models.fashion_mnist import MEAN, STD

    items = discover_images(["sample_images"])[::5]  # 10 images, two per class
    pre = Preprocess((28, 28), "L", MEAN, STD)
    return torch.stack([pre.load(str(it.path)) for it in items])


def test_gradient_and_gradcam_decorrelate_guided_backprop_much_less(images):
    s = mprt(METHODS, images)
    spear = {m: v[0] for m, v in s.items()}
    assert spear["saliency"].shape == (7,)
    for m in ("saliency", "gradcam"):
        assert spear[m][0] < 0.4, m  # the classifier alone already changes the map
        assert spear[m][-1] < 0.3, m  # fully randomised: little left
    gb = spear["guided_backprop"]
    assert (gb[:4] > 0.6).all()  # head and last blocks random: guided backprop barely notices
    for stage in range(2, 4):
        assert gb[stage] > 2 * max(spear["saliency"][stage], spear["gradcam"][stage])
    assert gb[-1] > spear["saliency"][-1] and gb[-1] > spear["gradcam"][-1]


def test_integrated_gradients_decorrelate_and_the_black_background_does_not(images):
    s = mprt([{"name": "integrated_gradients", "options": {"steps": 16, "baseline": "zeros"}}], images)
    assert s["integrated_gradients"][0, -1] < 0.45
    black = mprt([{"name": "integrated_gradients", "options": {"steps": 16, "reduce": "sum"}}], images)
    spearman_abs, signed, _ = black["integrated_gradients"][:, -1]
    assert spearman_abs > 0.7  # the shared exact zeros of the black background
    assert signed < 0.3  # what the model contributes does decorrelate
