"""``--layers auto``: the seed-000 candidates (pre- and post-activation map of every feature block)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from xaicli.errors import ModelError, UnknownNameError
from xaicli.methods import TopK, create_method
from xaicli.models.candidates import ACTIVATIONS, PRE_ACTIVATION, layer_candidates, resolve_layers

SEED_000 = ["features.0.bn", "features.0.relu", "features.1.bn", "features.1.relu", "features.2.bn",
            "features.2.relu"]


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _vgg(arch: str) -> nn.Module:
    """torchvision's VGG feature stack (its module names) with a small head instead of 4096-wide layers."""
    from torchvision.models.vgg import cfgs, make_layers

    model = nn.Module()
    model.features = make_layers(cfgs["A"], batch_norm=arch.endswith("_bn"))
    model.avgpool = nn.AdaptiveAvgPool2d(7)
    model.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512 * 49, 10))
    model.forward = lambda x: model.classifier(model.avgpool(model.features(x)))
    return model


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_bundled_model_gives_the_six_seed_000_layers() -> None:
    fm = pytest.importorskip("xaicli.models.fashion_mnist")
    model = fm.FashionMNISTCNN().eval()  # architecture only: no weights needed
    found = layer_candidates(model, (1, 28, 28))
    assert [c.name for c in found] == SEED_000
    assert [c.role for c in found] == ["pre", "post"] * 3
    assert [c.stage for c in found] == [1, 1, 2, 2, 3, 3]
    assert [c.shape for c in found] == [(32, 28, 28)] * 2 + [(64, 14, 14)] * 2 + [(128, 7, 7)] * 2
    assert found[2].label == "features.1.bn\nblock 2 pre-act 14×14"


def test_resnet18_gives_stage_outputs_and_their_pre_activations() -> None:
    model = torchvision.models.resnet18(weights=None)
    model.train()
    found = layer_candidates(model, (3, 64, 64))
    assert [c.name for c in found] == ["layer1.1.bn2", "layer1", "layer2.1.bn2", "layer2", "layer3.1.bn2",
                                       "layer3", "layer4.1.bn2", "layer4"]
    assert model.training and _no_hooks(model)  # mode restored, no hook left behind


def test_resnet50_bottlenecks() -> None:
    found = layer_candidates(torchvision.models.resnet50(weights=None), (3, 64, 64))
    assert [c.name for c in found] == ["layer1.2.bn3", "layer1", "layer2.3.bn3", "layer2", "layer3.5.bn3",
                                       "layer3", "layer4.2.bn3", "layer4"]


@pytest.mark.parametrize("arch", ["vgg11", "vgg11_bn", "mobilenet_v2", "mobilenet_v3_small"])
def test_other_cnns_get_a_pre_post_pair_per_resolution(arch: str) -> None:
    model = _vgg(arch) if arch.startswith("vgg") else torchvision.models.get_model(arch, weights=None)
    found = layer_candidates(model, (3, 64, 64))
    modules = dict(model.named_modules())
    assert len(found) >= 8 and len(found) % 2 == 0
    sides = [c.shape[-1] for c in found[::2]]
    assert sides == sorted(sides, reverse=True) and len(set(sides)) == len(sides)  # one pair per resolution
    for pre, post in zip(found[::2], found[1::2], strict=True):
        assert (pre.role, post.role) == ("pre", "post") and pre.shape == post.shape
        assert isinstance(modules[pre.name], PRE_ACTIVATION)
        assert isinstance(modules[post.name], ACTIVATIONS)
    if arch == "vgg11_bn":
        assert all(isinstance(modules[c.name], nn.BatchNorm2d) for c in found[::2])  # BN after the conv
    if arch == "mobilenet_v2":
        assert [c.name for c in found[-2:]] == ["features.18.1", "features.18.2"]


def test_every_resnet_candidate_can_be_explained() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    names = [c.name for c in layer_candidates(model, (3, 64, 64))]
    out = create_method("gradcam", model, names).explain(torch.randn(2, 3, 64, 64), TopK(1))
    assert set(out.maps) == set(names)
    assert all(m.shape == (2, 1, 64, 64) and torch.isfinite(m).all() for m in out.maps.values())


def test_resolve_layers_auto_list_and_errors() -> None:
    fm = pytest.importorskip("xaicli.models.fashion_mnist")
    model = fm.FashionMNISTCNN().eval()
    assert [c.name for c in resolve_layers("auto", model, (1, 28, 28))] == SEED_000
    named = resolve_layers("features.2, features.0.conv", model, (1, 28, 28))
    assert [(c.name, c.role, c.shape) for c in named] == [("features.2", None, (128, 7, 7)),
                                                          ("features.0.conv", None, (32, 28, 28))]
    assert named[0].label == "features.2\n7×7"
    with pytest.raises(UnknownNameError, match="features.1.bn"):
        resolve_layers("features.1.bnn", model, (1, 28, 28))
    with pytest.raises(ModelError, match="feature map"):
        resolve_layers(["classifier.1"], model, (1, 28, 28))


def test_auto_without_activation_modules_is_a_clear_error() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(ModelError, match="--layers"):
        resolve_layers("auto", model, (1, 8, 8))
