"""Parity with pytorch-grad-cam (optional test extra `parity`; skipped cleanly when not installed).

pytorch-grad-cam's pipeline differs by design in places, and each is aligned here rather than hidden:
* Grad-CAM++: it does not normalise the alphas (our ``alpha_norm: false``) and adds 1e-6 to the
  denominator (our ``eps: 1e-6``), which matters where gradients are small (see the last test).
* Score-CAM: it weights channels by the soft-max over *channels* of the raw target logits
  (``weights: channel_softmax``; seed 001 and the paper use the class probability, our default), and
  upsamples the masks with ``align_corners=True`` (``mask_align_corners: true``): at 14 -> 28 pixels
  that alone drops the correlation to ~0.88 on some images.
* It min-max normalises at layer resolution and then resizes with OpenCV; we resize, then normalise.
* XGrad-CAM: it adds 1e-7 to each channel's activation sum (``eps: 1e-7``; the paper adds nothing).
* Eigen-CAM: the sign of the principal component is whatever its NumPy SVD returns; xaicli orients it
  to correlate positively with the summed activations. The reference's projection is oriented by the
  same rule here (:func:`_oriented`), so the comparison checks everything else.
* Ablation-CAM: it ablates to 0 only where the layer's minimum is 0 (else to ``min - 1e7``); xaicli and
  the paper always use 0, so it is compared on post-ReLU layers.
* FullGrad: it ignores ``target_layers`` (every Conv2d / BatchNorm2d with a bias), as xaicli does.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_grad_cam")
tqdm = pytest.importorskip("tqdm")
from pytorch_grad_cam import (  # noqa: E402
    AblationCAM,
    EigenCAM,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from xaicli.methods import create_method  # noqa: E402

pytestmark = pytest.mark.parity

CASES = {
    "gradcam": (GradCAM, {}),
    "gradcam_pp": (GradCAMPlusPlus, {"alpha_norm": False, "eps": 1e-6}),
    "scorecam": (ScoreCAM, {"weights": "channel_softmax", "mask_align_corners": True}),
    "xgradcam": (XGradCAM, {"eps": 1e-7}),
    "layercam": (LayerCAM, {}),
    "hirescam": (HiResCAM, {}),
    "eigencam": (EigenCAM, {}),
    "ablationcam": (AblationCAM, {}),
    "fullgrad": (FullGrad, {}),
}
POST_RELU = {"ablationcam"}  # compared on a post-ReLU layer (see the module docstring)


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


def _oriented(project):
    """pytorch-grad-cam's ``get_2d_projection`` with the sign rule of xaicli's Eigen-CAM: each projection
    is flipped where it correlates negatively with the summed, centred activations."""

    def oriented(activation_batch: np.ndarray) -> np.ndarray:
        proj = project(activation_batch)  # (B, h, w)
        flat = activation_batch.reshape(*activation_batch.shape[:2], -1)  # (B, C, h*w)
        total = (flat - flat.mean(axis=2, keepdims=True)).sum(axis=1)  # (B, h*w)
        sign = np.where((proj.reshape(len(proj), -1) * total).sum(axis=1) < 0, -1.0, 1.0)
        return np.float32(proj * sign[:, None, None])

    return oriented


def _compare(model, layer_name: str, x: torch.Tensor, name: str) -> list[float]:
    import pytorch_grad_cam.ablation_cam as ablation_cam
    import pytorch_grad_cam.eigen_cam as eigen_cam

    ref_cls, opts = CASES[name]
    model.eval()
    logits = model(x).detach()
    targets = logits.argmax(1)
    (ours,) = create_method(name, model, [layer_name], opts).explain(x, targets).maps.values()
    ours = ours[:, 0]
    model = _without_inplace(model)
    layers = [] if name == "fullgrad" else [dict(model.named_modules())[layer_name]]  # FullGrad: all biases
    silent_tqdm = SimpleNamespace(tqdm=functools.partial(tqdm.tqdm, disable=True))
    oriented = _oriented(eigen_cam.get_2d_projection)
    with mock.patch.object(eigen_cam, "get_2d_projection", oriented), \
            mock.patch.object(ablation_cam, "tqdm", silent_tqdm), \
            ref_cls(model=model, target_layers=layers) as cam:
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
    elif name == "ablationcam":  # the reference runs every ablated copy through the whole network
        corr = _compare(model, "layer2", x[:1], name)
    else:
        corr = _compare(model, "layer4", x, name)
    assert min(corr) >= 0.99, corr


@pytest.mark.parametrize("name", list(CASES))
def test_bundled_fashion_mnist_model(name, sample_batch):
    from xaicli.models.fashion_mnist import fashion_mnist_cnn

    model = fashion_mnist_cnn()
    corr = _compare(model, "features.1.relu" if name in POST_RELU else "features.1.bn", sample_batch, name)
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
