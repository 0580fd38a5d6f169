"""Grad-CAM on vision transformers equals pytorch-grad-cam with its documented ``reshape_transform``.

pytorch-grad-cam's README (and its ``vit_example.py`` / ``swinT_example.py``) explains a ViT at
``blocks[-1].norm1`` with ``reshape_transform`` dropping the class token and folding 14x14 patches into a
map, and a Swin with a transform that moves channels first. xaicli infers both layouts; the maps must
agree (Pearson r >= 0.99 per image). Random weights, small inputs where the model allows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from tests.tiny_vit import tiny_torchvision_vit  # noqa: E402
from xaicli.methods import create_method  # noqa: E402
from xaicli.models.layers import default_layer, find_module  # noqa: E402

pytestmark = [pytest.mark.parity, pytest.mark.usefixtures("torch_single_thread")]
PGC = {"gradcam": (GradCAM, {}), "gradcam_pp": (GradCAMPlusPlus, {"alpha_norm": False, "eps": 1e-6})}


def vit_reshape_transform(height: int, width: int, prefix: int = 1):
    """pytorch-grad-cam's documented ViT transform (class token(s) dropped, tokens folded to a map)."""

    def reshape_transform(tensor):
        result = tensor[:, prefix:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    return reshape_transform


def nhwc_transform(tensor):
    return tensor.permute(0, 3, 1, 2)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 1.0 if np.allclose(a, b, atol=1e-6) else 0.0
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def compare(model: nn.Module, x: torch.Tensor, layer: str, transform, name: str = "gradcam") -> list[float]:
    model.eval()
    targets = model(x).argmax(1)
    cls, opts = PGC[name]
    ours = create_method(name, model, [layer], opts).explain(x, targets).maps[layer][:, 0]
    with cls(model=model, target_layers=[find_module(model, layer)], reshape_transform=transform) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    assert ours.amax() > 0
    return [pearson(ours[i].numpy(), ref[i]) for i in range(x.shape[0])]


def images(shape, b=2, seed=0):
    return torch.randn(b, *shape, generator=torch.Generator().manual_seed(seed))


def randomise_head(head: nn.Linear) -> None:
    """torchvision zero-initialises ViT heads (all gradients zero); give it seeded weights."""
    torch.manual_seed(1)
    with torch.no_grad():
        nn.init.normal_(head.weight, std=0.5)


@pytest.mark.parametrize("name", list(PGC))
def test_torchvision_vit_default_layer(name):
    model = tiny_torchvision_vit(image=32, patch=8, layers=3)
    layer = default_layer(model, (3, 32, 32))
    assert layer == "encoder.layers.encoder_layer_2.ln_1"
    assert min(compare(model, images((3, 32, 32)), layer, vit_reshape_transform(4, 4), name)) >= 0.99


@pytest.mark.parametrize("arch, prefix", [("vit_tiny_patch16_224", 1), ("deit_tiny_patch16_224", 1),
                                          ("deit_tiny_distilled_patch16_224", 2)])
def test_timm_vits_at_blocks_minus_one_norm1(arch, prefix):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, img_size=64).eval()
    layer = default_layer(model, (3, 64, 64))
    assert layer == f"blocks.{len(model.blocks) - 1}.norm1"
    corr = compare(model, images((3, 64, 64)), layer, vit_reshape_transform(4, 4, prefix))
    assert min(corr) >= 0.99, corr


def test_torchvision_swin_t_channels_last_norm():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.swin_t(weights=None).eval()
    layer = default_layer(model, (3, 64, 64))
    assert layer == "norm"
    assert min(compare(model, images((3, 64, 64)), layer, nhwc_transform)) >= 0.99


def test_torchvision_convnext_block_internals_are_channels_last():
    """ConvNeXt's ``block.2`` is a LayerNorm on (B, h, w, C) - the stripes the issue reported."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(weights=None).eval()
    corr = compare(model, images((3, 64, 64)), "features.5.8.block.2", nhwc_transform)
    assert min(corr) >= 0.99, corr


@pytest.mark.slow
def test_torchvision_vit_b_16_at_224():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None).eval()
    randomise_head(model.heads.head)
    layer = default_layer(model, (3, 224, 224))
    assert layer == "encoder.layers.encoder_layer_11.ln_1"
    assert min(compare(model, images((3, 224, 224), b=1), layer, vit_reshape_transform(14, 14))) >= 0.99
