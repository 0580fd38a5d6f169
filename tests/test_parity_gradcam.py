"""Parity with pytorch-grad-cam (optional test extra `parity`; skipped cleanly when not installed).

pytorch-grad-cam's pipeline differs by design in places, and each is aligned here rather than hidden:
* Grad-CAM++: it does not normalise the alphas (our ``alpha_norm: false``) and adds 1e-6 to the
  denominator (our ``eps: 1e-6``), which matters where gradients are small (see the last test).
* Score-CAM: it weights channels by the soft-max over *channels* of the raw target logits
  (``weights: channel_softmax``; seed 001 and the paper use the class probability, our default), and
  upsamples the masks with ``align_corners=True`` (``mask_align_corners: true``): at 14 -> 28 pixels
  that alone drops the correlation to ~0.88 on some images.
* It min-max normalises at layer resolution and then resizes with OpenCV; we resize, then normalise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from xaicli.methods import create_method  # noqa: E402

pytestmark = pytest.mark.parity

CASES = {
    "gradcam": (GradCAM, {}),
    "gradcam_pp": (GradCAMPlusPlus, {"alpha_norm": False, "eps": 1e-6}),
    "scorecam": (ScoreCAM, {"weights": "channel_softmax", "mask_align_corners": True}),
}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; two constant maps (e.g. both all-zero after the ReLU) agree perfectly."""
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 1.0 if np.allclose(a, b, atol=1e-6) else 0.0
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _without_inplace(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose ReLUs are not in-place.

    pytorch-grad-cam stores the hooked layer's output tensor itself; an in-place ReLU right after the
    layer (the bundled model's ``bn -> ReLU(inplace=True)``) then overwrites its "activations" with
    post-ReLU values. xaicli is immune to that (see ``capture_activations``), so the reference runs on
    a copy without in-place ops, which computes the same function.
    """
    import copy

    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    return ref


def _compare(model, layer_name: str, x: torch.Tensor, name: str) -> list[float]:
    ref_cls, opts = CASES[name]
    model.eval()
    logits = model(x).detach()
    targets = logits.argmax(1)
    ours = create_method(name, model, [layer_name], opts).explain(x, targets).maps[layer_name][:, 0]
    model = _without_inplace(model)
    layer = dict(model.named_modules())[layer_name]
    with ref_cls(model=model, target_layers=[layer]) as cam:
        if name == "scorecam":
            cam.batch_size = 64
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return [_pearson(ours[i].numpy(), ref[i]) for i in range(x.shape[0])]


@pytest.mark.parametrize("name", list(CASES))
def test_resnet18_random_weights(name):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    if name == "scorecam":  # one forward per channel and image: keep it to 128 channels x 1 image
        corr = _compare(model, "layer2", x[:1], name)
    else:
        corr = _compare(model, "layer4", x, name)
    assert min(corr) >= 0.99, corr


@pytest.mark.parametrize("name", list(CASES))
def test_bundled_fashion_mnist_model(name, sample_batch):
    from xaicli.models.fashion_mnist import fashion_mnist_cnn

    model = fashion_mnist_cnn()
    corr = _compare(model, "features.1.bn", sample_batch, name)
    assert min(corr) >= 0.99, corr


@pytest.fixture
def sample_batch():
    """Eight real sample images, normalised like the demo config."""
    from pathlib import Path

    from PIL import Image

    from xaicli.models import fashion_mnist as fm

    root = Path(__file__).resolve().parent.parent / "sample_images"
    files = sorted(root.rglob("*.png"))[::6][:8]
    if not files or not fm.WEIGHTS_PATH.is_file():
        pytest.skip("bundled sample images / weights not present")
    arr = np.stack([np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255 for f in files])
    return (torch.from_numpy(arr)[:, None] - fm.MEAN[0]) / fm.STD[0]


def test_gradcam_pp_epsilon_explains_the_difference_on_small_gradients(sample_batch):
    """Without pytorch-grad-cam's 1e-6 the bundled model's maps differ visibly; with it they agree."""
    from xaicli.models.fashion_mnist import fashion_mnist_cnn

    model = fashion_mnist_cnn()
    with_eps = _compare(model, "features.1.bn", sample_batch, "gradcam_pp")
    CASES["gradcam_pp"] = (GradCAMPlusPlus, {"alpha_norm": False})
    try:
        without = _compare(model, "features.1.bn", sample_batch, "gradcam_pp")
    finally:
        CASES["gradcam_pp"] = (GradCAMPlusPlus, {"alpha_norm": False, "eps": 1e-6})
    assert min(with_eps) >= 0.99
    assert min(without) < min(with_eps)
