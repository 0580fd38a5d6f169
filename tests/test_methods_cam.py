"""CAM family against analytic truth on hand-built models whose target layer and head we control."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xaicli.methods import TopK, create_method, methods_where

torch.manual_seed(0)


class LinearHead(nn.Module):
    """x (B, C, h, w) -> feat = Identity(x) -> logits_c = sum_kij V[c,k,i,j] * feat_kij.

    The gradient of logit c w.r.t. the hooked layer is exactly V[c], so every CAM formula can be
    evaluated by hand.
    """

    def __init__(self, c: int = 4, h: int = 5, w: int = 6, classes: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.feat = nn.Identity()
        self.head = nn.Linear(c * h * w, classes, bias=True)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(classes, c * h * w, generator=g))
            self.head.bias.copy_(torch.randn(classes, generator=g))
        self.shape = (c, h, w)

    def forward(self, x):
        return self.head(self.feat(x).flatten(1))

    def v(self, cls: int) -> np.ndarray:
        return self.head.weight[cls].detach().double().numpy().reshape(self.shape)


def _inputs(model: LinearHead, b: int = 3) -> torch.Tensor:
    return torch.rand(b, *model.shape, generator=torch.Generator().manual_seed(1)) * 2 - 0.5


def _raw(name: str, model: nn.Module, layer: str = "feat", **opts):
    return create_method(name, model, [layer], {"normalise": False, **opts})


@pytest.mark.parametrize("sign", [1, -1])
def test_gradcam_equals_formula(sign):
    model = LinearHead().eval()
    x = _inputs(model)
    name = "gradcam" if sign == 1 else "negative_gradcam"
    out = _raw(name, model).explain(x, TopK(2))
    logits = model(x).detach()
    assert torch.equal(out.targets, logits.topk(2, dim=1).indices)
    for b in range(x.shape[0]):
        for k in range(2):
            v = model.v(int(out.targets[b, k]))
            alpha = v.mean(axis=(1, 2))  # eq. 1: (1/Z) sum_ij dy/dA
            expected = np.maximum(sign * np.einsum("k,kij->ij", alpha, x[b].double().numpy()), 0)
            np.testing.assert_allclose(out.maps["feat"][b, k].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_negative_gradcam_is_gradcam_with_negated_weights():
    model = LinearHead().eval()
    x = _inputs(model)
    neg = _raw("negative_gradcam", model).explain(x, TopK(3)).maps["feat"]
    with torch.no_grad():
        model.head.weight.neg_()
    flipped = _raw("gradcam", model).explain(x, torch.tensor([[0, 1, 2]])).maps["feat"]
    with torch.no_grad():
        model.head.weight.neg_()
    order = model(x).topk(3, dim=1).indices
    torch.testing.assert_close(neg, flipped.gather(1, order[:, :, None, None].expand_as(flipped)))


def seed001_gradcam_pp(conv_output: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Direct NumPy transcription of seed 001's Keras grad_cam_plus_plus (channel-last, one image).

    exp(y_c) multiplies first/second/third terms in the seed; it cancels in alphas and only scales the
    weights (and the map, which the seed then divides by its max), so it is set to 1 here and the
    comparison is made after max-normalisation, as the seed does.
    """
    first, second, third = grads, grads**2, grads**3
    global_sum = np.sum(conv_output.reshape((-1, first.shape[2])), axis=0)
    alpha_num = second
    alpha_denom = second * 2.0 + third * global_sum.reshape((1, 1, first.shape[2]))
    alpha_denom = np.where(alpha_denom != 0.0, alpha_denom, np.ones(alpha_denom.shape))
    alphas = alpha_num / alpha_denom
    weights = np.maximum(first, 0.0)
    alpha_normalization_constant = np.sum(np.sum(alphas, axis=0), axis=0)
    alphas /= alpha_normalization_constant.reshape((1, 1, first.shape[2]))
    deep_linearization_weights = np.sum((weights * alphas).reshape((-1, first.shape[2])), axis=0)
    cam = np.sum(deep_linearization_weights * conv_output, axis=2)
    cam = np.maximum(cam, 0)
    return cam / np.max(cam)


def test_gradcam_pp_default_equals_seed001_transcription():
    model = LinearHead().eval()
    x = _inputs(model)
    out = create_method("gradcam_pp", model, ["feat"]).explain(x, TopK(2))  # default: alpha_norm, normalised
    for b in range(x.shape[0]):
        for k in range(2):
            v = model.v(int(out.targets[b, k])).transpose(1, 2, 0)  # channel-last like Keras
            a = x[b].double().numpy().transpose(1, 2, 0)
            expected = seed001_gradcam_pp(a, v)
            ours = out.maps["feat"][b, k].numpy()
            # seed: cam / max; ours: min-max. Both are 0 where the ReLU clipped, so compare on that scale
            expected = (expected - expected.min()) / (expected.max() - expected.min())
            np.testing.assert_allclose(ours, expected, atol=1e-5)


@pytest.mark.parametrize("alpha_norm", [True, False])
def test_gradcam_pp_formula(alpha_norm):
    model = LinearHead().eval()
    x = _inputs(model)
    out = _raw("gradcam_pp", model, alpha_norm=alpha_norm).explain(x, TopK(2))
    for b in range(x.shape[0]):
        for k in range(2):
            g = model.v(int(out.targets[b, k]))
            a = x[b].double().numpy()
            denom = 2 * g**2 + a.sum(axis=(1, 2), keepdims=True) * g**3
            alpha = g**2 / np.where(denom != 0, denom, 1)
            if alpha_norm:
                alpha = alpha / alpha.sum(axis=(1, 2), keepdims=True)
            w = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))
            expected = np.maximum(np.einsum("k,kij->ij", w, a), 0)
            np.testing.assert_allclose(out.maps["feat"][b, k].numpy(), expected, rtol=1e-4, atol=1e-6)


def test_gradcam_pp_alpha_norm_matters():
    model = LinearHead().eval()
    x = _inputs(model)
    a = create_method("gradcam_pp", model, ["feat"], {"alpha_norm": True}).explain(x, TopK(1)).maps["feat"]
    b = create_method("gradcam_pp", model, ["feat"], {"alpha_norm": False}).explain(x, TopK(1)).maps["feat"]
    assert not torch.allclose(a, b, atol=1e-3)


class HalfSplit(nn.Module):
    """feat = [x * left_half, x * right_half]; logits = 10 * [mean_left(x), mean_right(x)] (x: 1x8x8).

    Class 0 depends only on channel 0's region. Score-CAM's weight for channel k is the class-0
    probability of the input masked by normalised channel k: sigmoid(+10) for channel 0 and
    sigmoid(-10) for channel 1 on an all-ones image.
    """

    def __init__(self):
        super().__init__()
        left = torch.zeros(1, 1, 8, 8)
        left[..., :4] = 1
        self.register_buffer("left", left)
        self.feat = nn.Identity()

    def forward(self, x):
        feat = self.feat(torch.cat([x * self.left, x * (1 - self.left)], dim=1))
        ml = (x * self.left).flatten(1).sum(1) / 32
        mr = (x * (1 - self.left)).flatten(1).sum(1) / 32
        return 10 * torch.stack([ml, mr], dim=1) + 0 * feat.sum()


def test_scorecam_highlights_the_channel_the_score_depends_on():
    model = HalfSplit().eval()
    x = torch.ones(2, 1, 8, 8)
    out = _raw("scorecam", model).explain(x, torch.tensor([0, 1]))
    m = out.maps["feat"]
    hi, lo = torch.sigmoid(torch.tensor(10.0)), torch.sigmoid(torch.tensor(-10.0))
    torch.testing.assert_close(m[0, 0, :, :4], torch.full((8, 4), float(hi)))
    torch.testing.assert_close(m[0, 0, :, 4:], torch.full((8, 4), float(lo)))
    torch.testing.assert_close(m[1, 0, :, 4:], torch.full((8, 4), float(hi)))  # class 1: right half
    norm = create_method("scorecam", model, ["feat"]).explain(x, torch.tensor([0, 1])).maps["feat"]
    assert norm[0, 0, :, :4].min() == 1 and norm[0, 0, :, 4:].max() == 0


class SmallCNN(nn.Module):
    def __init__(self, inplace: bool = True):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace)
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 5)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-0.2, 0.2, generator=g)
            bn.running_var.uniform_(0.5, 1.5, generator=g)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(torch.nn.functional.max_pool2d(x, 2))))
        return self.fc(self.pool(x).flatten(1))


def test_inplace_relu_after_the_layer_does_not_corrupt_activations():
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    inplace, plain = SmallCNN(True).eval(), SmallCNN(False).eval()
    for name in methods_where(family="cam", needs_layer=True):
        a = create_method(name, inplace, ["bn2"]).explain(x, TopK(2)).maps["bn2"]
        b = create_method(name, plain, ["bn2"]).explain(x, TopK(2)).maps["bn2"]
        torch.testing.assert_close(a, b)
    # and against a hand computation with autograd on the non-inplace model
    acts = {}
    h = plain.bn2.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    xg = x.clone()
    logits = plain(xg)
    h.remove()
    tgt = logits.argmax(1)
    g = torch.autograd.grad(logits.gather(1, tgt[:, None]).sum(), acts["a"])[0]
    cam = torch.relu((g.mean((2, 3), keepdim=True) * acts["a"]).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = cam.flatten(1).min(1).values, cam.flatten(1).max(1).values
    expected = (cam - lo[:, None, None]) / (hi - lo)[:, None, None]
    ours = create_method("gradcam", inplace, ["bn2"]).explain(x, TopK(1)).maps["bn2"][:, 0]
    torch.testing.assert_close(ours, expected.detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", methods_where(family="cam", needs_layer=True))
def test_batch_of_n_equals_n_batches_of_one_and_layers_together_equal_apart(name):
    model = SmallCNN().eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    together = create_method(name, model, ["bn1", "bn2"]).explain(x, TopK(2))
    for layer in ("bn1", "bn2"):
        alone = create_method(name, model, [layer]).explain(x, TopK(2)).maps[layer]
        torch.testing.assert_close(together.maps[layer], alone, atol=1e-5, rtol=1e-4)
        singles = torch.cat([create_method(name, model, [layer]).explain(x[i : i + 1], TopK(2)).maps[layer]
                             for i in range(3)])
        torch.testing.assert_close(alone, singles, atol=1e-5, rtol=1e-4)


def test_scorecam_chunked_equals_unchunked_and_max_n_keeps_top_std_channels():
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    full = create_method("scorecam", model, ["bn2"], {"chunk_size": 1000}).explain(x, TopK(2)).maps["bn2"]
    chunked = create_method("scorecam", model, ["bn2"], {"chunk_size": 3}).explain(x, TopK(2)).maps["bn2"]
    torch.testing.assert_close(full, chunked, atol=1e-5, rtol=1e-4)
    all_n = create_method("scorecam", model, ["bn2"], {"max_n": 8}).explain(x, TopK(2)).maps["bn2"]
    torch.testing.assert_close(full, all_n, atol=1e-5, rtol=1e-4)  # 8 channels: max_n 8 keeps all
    fewer = create_method("scorecam", model, ["bn2"], {"max_n": 2}).explain(x, TopK(2)).maps["bn2"]
    assert not torch.allclose(full, fewer)


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


class FailingHead(SmallCNN):
    def forward(self, x):
        super().forward(x)
        raise RuntimeError("boom")


@pytest.mark.parametrize("name", methods_where(family="cam"))
def test_hooks_and_state_restored_after_success_and_error(name):
    x = torch.randn(2, 3, 16, 16)
    for model, fails in ((SmallCNN().train(), False), (FailingHead().train(), True)):
        model.fc.weight.requires_grad_(True)
        model.conv1.weight.requires_grad_(False)
        if fails:
            with pytest.raises(RuntimeError, match="boom"):
                create_method(name, model, ["bn2"]).explain(x, TopK(1))
        else:
            create_method(name, model, ["bn2"]).explain(x, TopK(1))
        assert _hook_count(model) == 0
        assert model.training
        assert model.fc.weight.requires_grad and not model.conv1.weight.requires_grad
        assert model.fc.weight.grad is None  # no parameter gradients were computed


def test_unknown_layer_lists_close_matches():
    from xaicli.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="bn2"):
        create_method("gradcam", SmallCNN(), ["bn3"]).explain(torch.randn(1, 3, 8, 8), TopK(1))
