"""Attention methods: the capture leaves models as they were, and each method equals a transcription of
its authors' code (attention read independently of xaicli's capture), or torchcam's LeGrad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tests.tiny_vit import tiny_demo_vit, tiny_torchvision_vit
from xaicli.errors import ModelError
from xaicli.methods import TopK, create_method, methods_where
from xaicli.methods.transformer.capture import capture_attention

pytestmark = pytest.mark.usefixtures("torch_single_thread")
ATTENTION = methods_where(needs_attention=True)


def timm_vit(img_size: int = 32, seed: int = 0) -> nn.Module:
    """timm's ViT-Tiny/16 with random weights at a small input (2x2 patches at 32x32)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img_size, depth=3).eval()


MODELS = {  # name -> (builder, input shape)
    "torchvision": (lambda: tiny_torchvision_vit(layers=3), (3, 12, 12)),
    "demo": (lambda: tiny_demo_vit(depth=3), (1, 28, 28)),
    "timm": (timm_vit, (3, 32, 32)),
}


def inputs(shape: tuple[int, ...], b: int = 2, seed: int = 1) -> Tensor:
    return torch.randn(b, *shape, generator=torch.Generator().manual_seed(seed))


def model_and_input(kind: str, b: int = 2) -> tuple[nn.Module, Tensor]:
    build, shape = MODELS[kind]
    return build(), inputs(shape, b)


# --- the capture -----------------------------------------------------------------------------------------


def patched_state(model: nn.Module) -> list:
    """Everything the capture may touch: instance forwards, fused_attn flags, hooks."""
    state = []
    for name, m in model.named_modules():
        state.append((name, "forward" in m.__dict__, m.__dict__.get("fused_attn"),
                      len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)))
    return state


@pytest.mark.parametrize("kind", list(MODELS))
def test_capture_keeps_outputs_and_records_every_block(kind):
    model, x = model_and_input(kind)
    with torch.no_grad():
        before = model(x)
        with capture_attention(model) as record:
            during = model(x)
        after = model(x)
    torch.testing.assert_close(during, before, atol=1e-5, rtol=1e-5)
    assert torch.equal(after, before)
    attentions = record.in_order()
    assert len(attentions) == 3
    for a in attentions:
        assert a.dim() == 4 and a.shape[0] == 2 and a.shape[-1] == a.shape[-2]
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))  # probability rows


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("name", ATTENTION)
def test_nothing_left_patched_after_success_and_after_a_failure(kind, name):
    model, x = model_and_input(kind)
    clean = patched_state(model)
    create_method(name, model).explain(x, TopK(2))
    assert patched_state(model) == clean

    last = list(model.modules())[-1]  # fails in the middle of the explain call (the head runs last)

    def fail(*_args):
        raise Boom("injected")

    handle = last.register_forward_hook(fail)
    with pytest.raises(Boom):
        create_method(name, model).explain(x, TopK(2))
    handle.remove()
    assert patched_state(model) == clean
    assert all(p.grad is None for p in model.parameters())


def test_models_without_global_attention_are_refused():
    with pytest.raises(ModelError, match="no self-attention modules"):
        create_method("attention_rollout", nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())).explain(
            inputs((3, 8, 8)))


def test_windowed_attention_is_refused():
    timm = pytest.importorskip("timm")
    from timm.models.swin_transformer import SwinTransformer

    model = SwinTransformer(img_size=56, patch_size=4, window_size=7, embed_dim=16, depths=(1, 1),
                            num_heads=(1, 1), num_classes=3).eval()
    assert timm
    with pytest.raises(ModelError, match="windowed"):
        create_method("attention_rollout", model).explain(inputs((3, 56, 56)))


@pytest.mark.parametrize("name", ATTENTION)
def test_batch_of_n_equals_n_batches_of_one(name):
    model, x = model_and_input("demo", b=3)
    together = create_method(name, model).explain(x, TopK(2)).maps[None]
    singles = torch.cat([create_method(name, model).explain(x[i : i + 1], TopK(2)).maps[None]
                         for i in range(3)])
    torch.testing.assert_close(together, singles, atol=1e-5, rtol=1e-4)
    top1 = create_method(name, model).explain(x, TopK(1)).maps[None]
    torch.testing.assert_close(together[:, :1], top1, atol=1e-5, rtol=1e-4)


# --- reference attention, read without xaicli ------------------------------------------------------------


def reference_attention(model: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """(logits, per-block (B, heads, T, T) attention) read the authors' way, without xaicli's capture:
    timm-style modules with ``fused_attn`` off and hooks on ``attn_drop`` (vit-explain); torchvision's
    ``nn.MultiheadAttention`` asked for per-head weights by a pre-hook, its output recomputed from them
    by a hook (torchcam's replay, so that gradients reach the weights). Parameters keep
    ``requires_grad``, so gradients flow as in the authors' notebooks."""
    found: list[Tensor] = []
    handles = []
    if hasattr(model, "encoder"):  # torchvision
        def ask_weights(_m, args, kwargs):
            return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

        def replay(m, args, _kwargs, output):
            attn, value = output[1], args[2]  # (B, heads, T, T), (B, T, D)
            b, t, d = value.shape
            v = nn.functional.linear(value, m.in_proj_weight[2 * d :], m.in_proj_bias[2 * d :])
            v = v.view(b, t, m.num_heads, d // m.num_heads).transpose(1, 2)
            found.append(attn)
            return m.out_proj((attn @ v).transpose(1, 2).reshape(b, t, d)), None

        for block in model.encoder.layers:
            handles.append(block.self_attention.register_forward_pre_hook(ask_weights, with_kwargs=True))
            handles.append(block.self_attention.register_forward_hook(replay, with_kwargs=True))
    else:
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
                handles.append(m.attn_drop.register_forward_hook(lambda _m, _i, out: found.append(out)))
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = True
    return logits, found


def ours(name: str, model: nn.Module, x: Tensor, targets: Tensor, **options) -> Tensor:
    """(B, h, w) raw maps at patch resolution (nearest upsampling keeps one value per patch)."""
    out = create_method(name, model, options={"normalise": False, "upsample": "nearest", **options})
    maps = out.explain(x, targets).maps[None][:, 0]
    step = x.shape[-1] // _grid(model, x)
    return maps[:, ::step, ::step]


def _grid(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        _, att = reference_attention(model, x[:1])
    return int(round((att[0].shape[-1] - 1) ** 0.5))


# Abnar & Zuidema's compute_joint_attention (github.com/samiraabnar/attention_flow), numpy, one image
def compute_joint_attention(att_mat, add_residual=True):
    if add_residual:
        residual_att = np.eye(att_mat.shape[1])[None, ...]
        aug_att_mat = att_mat + residual_att
        aug_att_mat = aug_att_mat / aug_att_mat.sum(axis=-1)[..., None]
    else:
        aug_att_mat = att_mat
    joint_attentions = np.zeros(aug_att_mat.shape)
    layers = joint_attentions.shape[0]
    joint_attentions[0] = aug_att_mat[0]
    for i in np.arange(1, layers):
        joint_attentions[i] = aug_att_mat[i].dot(joint_attentions[i - 1])
    return joint_attentions


# jacobgil/vit-explain vit_rollout.py rollout(), one image; the one change: a.sum(dim=-1, keepdim=True)
# (vit-explain's a.sum(dim=-1) broadcasts over columns; xaicli renormalises rows as the paper says)
def vit_explain_rollout(attentions, discard_ratio, head_fusion):
    result = torch.eye(attentions[0].size(-1))
    with torch.no_grad():
        for attention in attentions:
            if head_fusion == "mean":
                attention_heads_fused = attention.mean(axis=1)
            elif head_fusion == "max":
                attention_heads_fused = attention.max(axis=1)[0]
            elif head_fusion == "min":
                attention_heads_fused = attention.min(axis=1)[0]
            flat = attention_heads_fused.view(attention_heads_fused.size(0), -1)
            _, indices = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
            indices = indices[indices != 0]
            flat[0, indices] = 0
            eye = torch.eye(attention_heads_fused.size(-1))
            a = (attention_heads_fused + 1.0 * eye) / 2
            a = a / a.sum(dim=-1, keepdim=True)
            result = torch.matmul(a, result)
    mask = result[0, 0, 1:]
    return mask / mask.max()


# jacobgil/vit-explain vit_grad_rollout.py grad_rollout(), one image; same keepdim change
def vit_explain_grad_rollout(attentions, gradients, discard_ratio):
    result = torch.eye(attentions[0].size(-1))
    with torch.no_grad():
        for attention, grad in zip(attentions, gradients, strict=True):
            weights = grad
            attention_heads_fused = (attention * weights).mean(axis=1)
            attention_heads_fused[attention_heads_fused < 0] = 0
            flat = attention_heads_fused.view(attention_heads_fused.size(0), -1)
            _, indices = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
            flat[0, indices] = 0
            eye = torch.eye(attention_heads_fused.size(-1))
            a = (attention_heads_fused + 1.0 * eye) / 2
            a = a / a.sum(dim=-1, keepdim=True)
            result = torch.matmul(a, result)
    mask = result[0, 0, 1:]
    return mask / mask.max()


# Chefer et al.'s ViT notebook (github.com/hila-chefer/Transformer-MM-Explainability), one image
def avg_heads(cam, grad):
    cam = cam.reshape(-1, cam.shape[-2], cam.shape[-1])
    grad = grad.reshape(-1, grad.shape[-2], grad.shape[-1])
    cam = grad * cam
    cam = cam.clamp(min=0).mean(dim=0)
    return cam


def apply_self_attention_rules(r_ss, cam_ss):
    return torch.matmul(cam_ss, r_ss)


def chefer_relevance(attentions, gradients):
    num_tokens = attentions[0].shape[-1]
    r = torch.eye(num_tokens, num_tokens)
    for cam, grad in zip(attentions, gradients, strict=True):
        r += apply_self_attention_rules(r, avg_heads(cam, grad))
    return r[0, 1:]


def attention_and_gradients(model: nn.Module, x: Tensor, target: int) -> tuple[list[Tensor], list[Tensor]]:
    """One image's attention and the target logit's gradients w.r.t. them (tensor hooks, as the authors)."""
    logits, att = reference_attention(model, x)
    grads = torch.autograd.grad(logits[0, target], att)
    return [a.detach() for a in att], list(grads)


def correlation(a: Tensor, b: Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])


@pytest.mark.parity
@pytest.mark.parametrize("kind", list(MODELS))
def test_rollout_equals_the_authors_joint_attention(kind):
    model, x = model_and_input(kind)
    with torch.no_grad():
        _, att = reference_attention(model, x)
    got = ours("attention_rollout", model, x, TopK(1))
    for i in range(x.shape[0]):
        mats = np.stack([a[i].mean(0).double().numpy() for a in att])  # (layers, T, T), heads averaged
        joint = compute_joint_attention(mats)[-1]
        expected = torch.from_numpy(joint[0, 1:]).float().view(got.shape[1:])
        torch.testing.assert_close(got[i], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parity
@pytest.mark.parametrize("fusion, ratio", [("mean", 0.0), ("max", 0.5), ("min", 0.3), ("mean", 0.6)])
@pytest.mark.parametrize("kind", ["torchvision", "timm"])
def test_rollout_equals_vit_explain(kind, fusion, ratio):
    model, x = model_and_input(kind)
    got = ours("attention_rollout", model, x, TopK(1), head_fusion=fusion, discard_ratio=ratio)
    for i in range(x.shape[0]):
        with torch.no_grad():
            _, att = reference_attention(model, x[i : i + 1])
        expected = vit_explain_rollout(att, ratio, fusion).view(got.shape[1:])
        torch.testing.assert_close(got[i] / got[i].max(), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parity
@pytest.mark.parametrize("kind", list(MODELS))
def test_transformer_attribution_equals_chefer_et_al(kind):
    model, x = model_and_input(kind)
    targets = torch.tensor([1, 4])
    got = ours("transformer_attribution", model, x, targets)
    for i in range(x.shape[0]):
        att, grads = attention_and_gradients(model, x[i : i + 1], int(targets[i]))
        expected = chefer_relevance(att, grads).view(got.shape[1:])
        torch.testing.assert_close(got[i], expected, atol=1e-5, rtol=1e-4)
        assert expected.std() > 0


@pytest.mark.parity
@pytest.mark.parametrize("ratio", [0.0, 0.5])
@pytest.mark.parametrize("kind", ["torchvision", "demo"])
def test_grad_rollout_equals_vit_explain(kind, ratio):
    model, x = model_and_input(kind)
    targets = torch.tensor([2, 0])
    got = ours("grad_rollout", model, x, targets, discard_ratio=ratio)
    for i in range(x.shape[0]):
        att, grads = attention_and_gradients(model, x[i : i + 1], int(targets[i]))
        expected = vit_explain_grad_rollout(att, grads, ratio).view(got.shape[1:])
        torch.testing.assert_close(got[i] / got[i].max(), expected, atol=1e-5, rtol=1e-4)


def test_gradient_methods_are_class_specific_and_rollout_is_not():
    model, x = model_and_input("torchvision")
    for name in ATTENTION:
        maps = create_method(name, model).explain(x, TopK(3)).maps[None]
        same = torch.allclose(maps[:, 0], maps[:, 1]) and torch.allclose(maps[:, 0], maps[:, 2])
        assert same == (not create_method(name, model).uses_gradients), name


# --- torchcam's LeGrad -------------------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize("last_blocks", [0, 2])
def test_legrad_equals_torchcam(last_blocks):
    tc = pytest.importorskip("torchcam.methods")
    model, x = model_and_input("torchvision")
    targets = model(x).argmax(1)
    got = ours("legrad", model, x, targets, last_blocks=last_blocks)
    blocks = list(model.encoder.layers)[-last_blocks:] if last_blocks else list(model.encoder.layers)
    for i in range(x.shape[0]):
        with tc.LeGrad(model, blocks) as extractor:
            scores = model(x[i : i + 1])
            expected = extractor(int(targets[i]), scores, normalized=False)[0][0]
        torch.testing.assert_close(got[i], expected, atol=1e-6, rtol=1e-4)
        assert expected.std() > 0


def test_uniform_attention_gives_a_flat_rollout_written_as_zeros():
    """With zero query/key projections every head attends uniformly, so the class token's rollout is the
    same for every patch (exchangeable rows): a flat map, which the final normalisation writes as zeros
    (xaicli.methods.postprocess.normalise_map) instead of stretching float noise to [0, 1]."""
    from xaicli.engine.results import flat_maps

    model = tiny_torchvision_vit(layers=2)
    with torch.no_grad():
        for layer in model.encoder.layers:
            layer.self_attention.in_proj_weight.zero_()
            layer.self_attention.in_proj_bias.zero_()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    raw = create_method("attention_rollout", model, [], {"normalise": False}).explain(x, TopK(1)).maps[None]
    assert (raw.amax(dim=(-2, -1)) - raw.amin(dim=(-2, -1))).max() <= 1e-6 * raw.abs().max()
    maps = create_method("attention_rollout", model).explain(x, TopK(1)).maps[None]
    assert torch.equal(maps, torch.zeros_like(maps)) and flat_maps(maps).all()
