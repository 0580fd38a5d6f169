"""Layer layouts (NCHW, channels-last, tokens): inference, overrides, the reshape, and every CAM method on
token and channels-last layers against the same CAM on the equivalent NCHW layer."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from xaicli.errors import ModelError
from xaicli.methods import TopK, create_method, get_method, methods_where
from xaicli.models.layers import default_layer, describe_layers
from xaicli.models.layout import Layout, infer_layout, prefix_tokens, resolve_layout

pytestmark = pytest.mark.usefixtures("torch_single_thread")


# --- inference -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, size, kwargs, expected", [
    ((512, 7, 7), (224, 224), {}, Layout("nchw", (7, 7))),  # ResNet layer4
    ((8, 16, 20), (16, 20), {}, Layout("nchw", (16, 20))),  # full-resolution conv, non-square input
    ((7, 7, 768), (224, 224), {}, Layout("nhwc", (7, 7))),  # Swin stage: (7, 768) is no 224x224 grid
    ((56, 56, 96), (224, 224), {}, Layout("nhwc", (56, 56))),
    ((14, 18, 384), (224, 288), {}, Layout("nhwc", (14, 18))),
    ((8, 8, 10), (16, 20), {}, Layout("nchw", (8, 10))),  # both readings fit: NCHW unless a norm says so
    ((8, 8, 10), (16, 20), {"channels_last": True}, Layout("nhwc", (8, 8))),
    ((197, 768), (224, 224), {}, Layout("tokens", (14, 14), 1)),  # ViT-B/16: class token + 14x14
    ((198, 192), (224, 224), {"prefix": 2}, Layout("tokens", (14, 14), 2)),  # DeiT distilled
    ((196, 192), (224, 224), {}, Layout("tokens", (14, 14), 0)),  # no class token (average pooling)
    ((201, 384), (224, 224), {"prefix": 5}, Layout("tokens", (14, 14), 5)),  # class + 4 registers
    ((201, 384), (224, 224), {}, Layout("tokens", (14, 14), 5)),  # ... found without the hint too
    ((50, 64), (28, 28), {}, Layout("tokens", (7, 7), 1)),  # the demo ViT (50 = 5x10 is the wrong shape)
    ((1 + 6 * 8, 32), (96, 128), {}, Layout("tokens", (6, 8), 1)),  # non-square input
    ((10,), (28, 28), {}, None),  # logits
    ((1, 64), (28, 28), {}, None),  # a pooled token
])
def test_infer_layout(shape, size, kwargs, expected):
    assert infer_layout(shape, size, **kwargs) == expected


@pytest.mark.parametrize("shape, choice, grid, expected", [
    ((197, 768), "tokens_cls", None, Layout("tokens", (14, 14), 1)),
    ((196, 768), "tokens", None, Layout("tokens", (14, 14), 0)),
    ((197, 768), "tokens", None, Layout("tokens", (14, 14), 1)),  # class token inferred
    ((201, 768), "tokens", [14, 14], Layout("tokens", (14, 14), 5)),  # the grid decides the prefix
    ((197, 768), "auto", [14, 14], Layout("tokens", (14, 14), 1)),
    ((8, 8, 10), "nhwc", None, Layout("nhwc", (8, 8))),
    ((7, 7, 768), "nchw", None, Layout("nchw", (7, 768))),  # the user is believed
    ((7, 7, 768), "auto", [7, 7], Layout("nhwc", (7, 7))),
])
def test_layout_options_override_the_inference(shape, choice, grid, expected):
    assert resolve_layout(shape, (224, 224), choice, grid) == expected


@pytest.mark.parametrize("shape, choice, grid, message", [
    ((197, 768), "nhwc", None, "needs a 4-D output"),
    ((768, 14, 14), "tokens", None, "needs tokens"),
    ((197, 768), "tokens", [15, 15], "needs at least 225 tokens"),
    ((512, 7, 7), "nchw", [14, 14], "does not match"),
    ((1000,), "auto", None, "not a feature map"),
    ((197, 768), "tokens", [14], "grid must be"),
    ((197, 768), "tokens", ["14", 14], "grid must be"),
])
def test_impossible_layouts_are_refused_with_the_reason(shape, choice, grid, message):
    with pytest.raises(ModelError, match=message):
        resolve_layout(shape, (224, 224), choice, grid, layer="some.layer")


def test_to_nchw_reads_each_layout_back_to_the_same_map():
    nchw = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)  # (B, C, h, w)
    nhwc = nchw.permute(0, 2, 3, 1)
    patches = nchw.flatten(2).transpose(1, 2)  # (B, h*w, C), row-major
    tokens = torch.cat([torch.full((2, 2, 3), -1.0), patches], dim=1)  # two prefix tokens in front
    assert torch.equal(Layout("nchw", (4, 5)).to_nchw(nchw), nchw)
    assert torch.equal(Layout("nhwc", (4, 5)).to_nchw(nhwc), nchw)
    assert torch.equal(Layout("tokens", (4, 5), 2).to_nchw(tokens), nchw)


def test_to_nchw_is_a_view_so_writes_reach_the_layer_output():
    """Ablation-CAM zeroes a channel of a layer output through this view: on tokens only the patch
    tokens' feature changes, on NHWC the last dimension."""
    tokens = torch.ones(2, 1 + 20, 3)
    Layout("tokens", (4, 5), 1).to_nchw(tokens)[0, 1] = 0
    assert tokens[0, 1:, 1].eq(0).all() and tokens[0, 0].eq(1).all() and tokens[1].eq(1).all()
    assert tokens[0, :, [0, 2]].eq(1).all()
    nhwc = torch.ones(2, 4, 5, 3)
    Layout("nhwc", (4, 5)).to_nchw(nhwc)[1, 2] = 0
    assert nhwc[1, :, :, 2].eq(0).all() and nhwc.sum() == nhwc.numel() - 20


def test_prefix_tokens_from_the_model():
    from tests.tiny_vit import tiny_demo_vit, tiny_torchvision_vit

    assert prefix_tokens(tiny_torchvision_vit()) == 1  # class_token parameter
    assert prefix_tokens(tiny_demo_vit()) == 1  # num_prefix_tokens attribute
    assert prefix_tokens(nn.Linear(2, 2)) is None


# --- every CAM method on tokens and channels-last layers ----------------------------------------------


class Rearranged(nn.Module):
    """conv features (B, 8, 4, 5) -> the same values as NCHW, NHWC (behind a LayerNorm-free identity) or
    tokens behind a constant class token. The head reads the patch values plus the class token (after
    the layer on tokens, the parameter itself otherwise: the same constant), so a CAM of any of the three
    layers must equal the CAM of the NCHW one - and a method that changed the class token at the layer
    (Ablation-CAM zeroing a feature on every token) would not."""

    def __init__(self, layout: str):
        super().__init__()
        torch.manual_seed(0)
        self.layout = layout
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.arranged = nn.Identity()  # the layer explained
        self.head = nn.Linear(8, 5)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.cls_head = nn.Linear(8, 5, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        f = self.features(x)  # (B, 8, 4, 5)
        cls = self.cls[:, 0].expand(f.shape[0], -1)  # (B, 8)
        if self.layout == "nhwc":
            a = self.arranged(f.permute(0, 2, 3, 1))
            f = a.permute(0, 3, 1, 2)
        elif self.layout == "tokens":
            tokens = torch.cat([self.cls.expand(f.shape[0], -1, -1), f.flatten(2).transpose(1, 2)], dim=1)
            a = self.arranged(tokens)  # (B, 1 + 20, 8)
            f = a[:, 1:].transpose(1, 2).reshape(f.shape)
            cls = a[:, 0]
        else:
            f = self.arranged(f)
        return self.head(torch.tanh(f).mean(dim=(2, 3))) + self.cls_head(cls)


def test_rearranged_models_compute_the_same_function():
    x = torch.randn(2, 3, 8, 10, generator=torch.Generator().manual_seed(1))
    ref = Rearranged("nchw")(x)
    for layout in ("nhwc", "tokens"):
        torch.testing.assert_close(Rearranged(layout)(x), ref)


@pytest.mark.parametrize("layout, options", [
    ("nhwc", {"layer_layout": "nhwc"}),  # (4, 5, 8) on an 8x10 input: the NHWC reading needs the option
    ("tokens", {}),  # 21 tokens on 8x10: inferred as class token + 4x5
    ("tokens", {"layer_layout": "tokens_cls"}),
    ("tokens", {"grid": [4, 5]}),
])
@pytest.mark.parametrize("name", methods_where(family="cam"))
def test_cam_on_rearranged_layer_equals_cam_on_the_nchw_layer(name, layout, options):
    """Every method of the CAM family (the registry's, so a new one is covered when it registers): on an
    NHWC or token layer it gives the map it gives on the equivalent NCHW layer. A CAM that explains the
    input instead of a layer (FullGrad) takes no layout options and gives the same map on both models."""
    x = torch.randn(2, 3, 8, 10, generator=torch.Generator().manual_seed(1))
    ref_model, model = Rearranged("nchw"), Rearranged(layout)
    cls = get_method(name)
    fast = {"chunk_size": 7} if cls.chunked else {}  # several chunks, one of them partial
    if not cls.needs_layer:
        assert not {"layer_layout", "grid"} & set(cls.options)
        expected = create_method(name, ref_model, [], fast).explain(x, TopK(2)).maps[None]
        got = create_method(name, model, [], fast).explain(x, TopK(2)).maps[None]
    else:
        assert {"layer_layout", "grid"} <= set(cls.options)
        expected = create_method(name, ref_model, ["arranged"], fast).explain(x, TopK(2)).maps["arranged"]
        method = create_method(name, model, ["arranged"], {**fast, **options})
        got = method.explain(x, TopK(2)).maps["arranged"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert expected.amax() > 0  # a real map, not two blank ones


class ThroughGrid(nn.Module):
    """Wraps a ViT module with token output (B, p + h*w, D): the patch tokens pass through the child
    ``grid`` as an NCHW map (B, D, h, w) and come back; the ``p`` class/register tokens bypass it. The
    wrapped model computes the same function, and ``<layer>.grid`` is the NCHW equivalent of ``<layer>``."""

    def __init__(self, inner: nn.Module, prefix: int, grid: tuple[int, int]):
        super().__init__()
        self.inner, self.prefix, self.hw = inner, prefix, grid
        self.grid = nn.Identity()

    def forward(self, *args, **kwargs) -> Tensor:
        t = self.inner(*args, **kwargs)  # (B, p + h*w, D)
        b, _, d = t.shape
        h, w = self.hw
        nchw = self.grid(t[:, self.prefix :].reshape(b, h, w, d).permute(0, 3, 1, 2))  # (B, D, h, w)
        return torch.cat([t[:, : self.prefix], nchw.permute(0, 2, 3, 1).reshape(b, h * w, d)], dim=1)


@pytest.mark.parametrize("name", methods_where(family="cam"))
def test_cam_on_a_vit_token_layer_equals_cam_on_its_nchw_equivalent(name):
    """Every CAM method of the registry on a real (tiny torchvision) ViT at its default layer, the last
    block's first norm (inside a residual block, class token in front): the map equals the map of the
    same model whose layer hands its patch tokens through an NCHW module. Ablation-CAM ablates the patch
    tokens' features only on both, Score-CAM masks with the same upsampled patch activations, and
    FullGrad (input-level) gives the same map on two models computing the same function."""
    import copy

    from tests.tiny_vit import tiny_torchvision_vit

    vit = tiny_torchvision_vit()
    layer = default_layer(vit, (3, 12, 12))  # encoder.layers.encoder_layer_1.ln_1, tokens 1 + 3x3, D = 16
    ref_model = copy.deepcopy(vit)
    parent, _, child = layer.rpartition(".")
    ref_parent = ref_model.get_submodule(parent)
    setattr(ref_parent, child, ThroughGrid(getattr(ref_parent, child), 1, (3, 3)))
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(ref_model(x), vit(x))
    cls = get_method(name)
    fast = {"chunk_size": 6} if cls.chunked else {}  # chunks spanning two images, one partial
    if cls.needs_layer:
        expected = create_method(name, ref_model, [f"{layer}.grid"], fast).explain(x, TopK(2))
        got = create_method(name, vit, [layer], fast).explain(x, TopK(2))
        expected_map, got_map = expected.maps[f"{layer}.grid"], got.maps[layer]
    else:
        expected = create_method(name, ref_model, [], fast).explain(x, TopK(2))
        got = create_method(name, vit, [], fast).explain(x, TopK(2))
        expected_map, got_map = expected.maps[None], got.maps[None]
    assert torch.equal(got.targets, expected.targets)
    torch.testing.assert_close(got_map, expected_map, atol=1e-5, rtol=1e-4)
    assert expected_map.amax() > 0  # a real map, not two blank ones


def test_ablationcam_on_a_vit_token_layer_zeroes_patch_features_only():
    """Ablation-CAM at a ViT's default layer (the last block's first norm, inside a residual block):
    each channel weight is the relative score drop when feature d of every patch token (not the class
    token) is zeroed at that layer."""
    from tests.tiny_vit import tiny_torchvision_vit

    model = tiny_torchvision_vit()
    layer = default_layer(model, (3, 12, 12))
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    method = create_method("ablationcam", model, [layer], {"normalise": False, "chunk_size": 5})
    got = method.explain(x, TopK(1))
    module = dict(model.named_modules())[layer]
    with torch.no_grad():
        acts = {}
        handle = module.register_forward_hook(lambda _m, _i, out: acts.setdefault("a", out.clone()))
        logits = model(x)
        handle.remove()
        tgt = logits.argmax(dim=1, keepdim=True)  # (B, 1)
        clean = logits.gather(1, tgt)[:, 0]  # (B,)
        width = acts["a"].shape[-1]
        weights = torch.empty(2, width)
        for d in range(width):
            def zero(_m, _i, out, d=d):
                out = out.clone()
                out[:, 1:, d] = 0  # patch tokens only: token 0 is the class token
                return out

            handle = module.register_forward_hook(zero)
            weights[:, d] = (clean - model(x).gather(1, tgt)[:, 0]) / clean
            handle.remove()
        patches = acts["a"][:, 1:].reshape(2, 3, 3, width).permute(0, 3, 1, 2)  # (B, D, 3, 3)
        expected = torch.relu(torch.einsum("bd,bdhw->bhw", weights, patches))[:, None]
    expected = method.finish(expected, (12, 12))
    assert torch.equal(got.targets, tgt)
    torch.testing.assert_close(got.maps[layer], expected, atol=1e-5, rtol=1e-4)
    # a chunk holding rows of two images met the residual around ln_1 and fell back to whole-network rows
    assert method.below_once[layer] is False


# --- default layers and the plan check ---------------------------------------------------------------


def test_default_layer_of_a_vit_is_the_last_blocks_first_norm():
    from tests.tiny_vit import tiny_demo_vit, tiny_torchvision_vit

    assert default_layer(tiny_torchvision_vit(layers=3), (3, 12, 12)) == "encoder.layers.encoder_layer_2.ln_1"
    assert default_layer(tiny_demo_vit(depth=3), (1, 28, 28)) == "blocks.2.norm1"


def test_layers_list_token_layouts():
    from tests.tiny_vit import tiny_torchvision_vit

    infos = {i.name: i for i in describe_layers(tiny_torchvision_vit(), (3, 12, 12))}
    assert infos["conv_proj"].layout == Layout("nchw", (3, 3))
    assert infos["encoder.layers.encoder_layer_1"].layout == Layout("tokens", (3, 3), 1)
    assert infos["encoder.layers.encoder_layer_1"].map_shape == (16, 3, 3)
    assert infos["heads.head"].layout is None


@pytest.mark.slow
@pytest.mark.parametrize("builder, size, expected", [
    ("torchvision:vit_b_16", 224, ("encoder.layers.encoder_layer_11.ln_1", Layout("tokens", (14, 14), 1))),
    ("torchvision:swin_t", 224, ("norm", Layout("nhwc", (7, 7)))),
    ("timm:vit_tiny_patch16_224", 224, ("blocks.11.norm1", Layout("tokens", (14, 14), 1))),
    ("timm:deit_tiny_patch16_224", 224, ("blocks.11.norm1", Layout("tokens", (14, 14), 1))),
    ("timm:deit_tiny_distilled_patch16_224", 224, ("blocks.11.norm1", Layout("tokens", (14, 14), 2))),
])
def test_default_layer_of_zoo_models(builder, size, expected):
    library, name = builder.split(":")
    if library == "timm":
        timm = pytest.importorskip("timm")
        model = timm.create_model(name, pretrained=False)
    else:
        import torchvision

        model = torchvision.models.get_model(name, weights=None)
    layer = default_layer(model.eval(), (3, size, size))
    infos = {i.name: i for i in describe_layers(model, (3, size, size), names=[layer])}
    assert (layer, infos[layer].layout) == expected
