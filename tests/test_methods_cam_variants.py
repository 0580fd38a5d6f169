"""The CAM variants (XGrad-CAM, LayerCAM, HiResCAM, Eigen-CAM, Ablation-CAM, FullGrad) against analytic
truth: hand-built models whose target layer is the input itself and whose head is linear, so the
gradients (``V[c]``), the ablated scores and the principal components are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xaicli.methods import TopK, create_method
from xaicli.methods.cam.eigencam import principal_projection
from xaicli.methods.cam.fullgrad import bias_layers, effective_bias

pytestmark = pytest.mark.usefixtures("torch_single_thread")


class LinearHead(nn.Module):
    """x (B, C, h, w) -> feat = Identity(x) -> logits_c = sum_kij V[c,k,i,j] * feat_kij + bias_c."""

    def __init__(self, c: int = 4, h: int = 5, w: int = 6, classes: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.feat = nn.Identity()
        self.head = nn.Linear(c * h * w, classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(classes, c * h * w, generator=g))
            self.head.bias.copy_(torch.randn(classes, generator=g))
        self.shape = (c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.feat(x).flatten(1))

    def v(self, cls: int) -> np.ndarray:
        return self.head.weight[cls].detach().double().numpy().reshape(self.shape)


def positive_inputs(model: LinearHead, b: int = 3) -> Tensor:
    """Post-ReLU-like activations (>= 0, some exact zeros), as the papers assume."""
    x = torch.rand(b, *model.shape, generator=torch.Generator().manual_seed(1)) * 2 - 0.4
    return x.clamp_min(0)


def raw_maps(name: str, model: nn.Module, x: Tensor, targets, layer: str = "feat", **opts) -> Tensor:
    method = create_method(name, model, [layer], {"normalise": False, **opts})
    return method.explain(x, targets).maps[layer]


def each_map(model: LinearHead, x: Tensor, targets: Tensor):
    """(b, k, A (C, h, w), V (C, h, w), clean logit) of every image and target, in float64."""
    logits = model(x).detach().double()
    for b in range(x.shape[0]):
        for k in range(targets.shape[1]):
            c = int(targets[b, k])
            yield b, k, x[b].double().numpy(), model.v(c), float(logits[b, c])


# --- gradient-weighted variants ------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 1e-7])
def test_xgradcam_weights_are_gradients_weighted_by_activation_share(eps: float) -> None:
    model = LinearHead().eval()
    x = positive_inputs(model)
    out = create_method("xgradcam", model, ["feat"], {"normalise": False, "eps": eps}).explain(x, TopK(2))
    for b, k, a, v, _ in each_map(model, x, out.targets):
        weights = (v * a).sum(axis=(1, 2)) / (a.sum(axis=(1, 2)) + eps)  # sum(grad * A) / sum(A)
        expected = np.maximum(np.einsum("k,kij->ij", weights, a), 0)
        np.testing.assert_allclose(out.maps["feat"][b, k].numpy(), expected, rtol=1e-4, atol=1e-6)


def test_xgradcam_dead_channel_gets_weight_zero() -> None:
    model = LinearHead().eval()
    x = positive_inputs(model)
    x[:, 1] = 0  # a channel that never fires: 0 / 0
    out = create_method("xgradcam", model, ["feat"], {"normalise": False}).explain(x, TopK(1))
    for b, k, a, v, _ in each_map(model, x, out.targets):
        total = a.sum(axis=(1, 2))
        weights = np.where(total != 0, (v * a).sum(axis=(1, 2)) / np.where(total != 0, total, 1), 0)
        expected = np.maximum(np.einsum("k,kij->ij", weights, a), 0)
        np.testing.assert_allclose(out.maps["feat"][b, k].numpy(), expected, rtol=1e-4, atol=1e-6)


def test_hirescam_is_elementwise_gradient_times_activation() -> None:
    """For a linear head, HiResCAM before its ReLU is each position's exact contribution to the logit."""
    model = LinearHead().eval()
    x = torch.rand(3, *model.shape, generator=torch.Generator().manual_seed(2)) * 2 - 1  # both signs
    out = create_method("hirescam", model, ["feat"], {"normalise": False}).explain(x, TopK(3))
    for b, k, a, v, logit in each_map(model, x, out.targets):
        contribution = (v * a).sum(axis=0)  # (h, w)
        np.testing.assert_allclose(out.maps["feat"][b, k].numpy(), np.maximum(contribution, 0), rtol=1e-4,
                                   atol=1e-6)
        bias = float(model.head.bias.detach()[int(out.targets[b, k])])
        assert contribution.sum() + bias == pytest.approx(logit, rel=1e-5, abs=1e-5)


def test_layercam_weights_each_position_by_its_positive_gradient() -> None:
    model = LinearHead().eval()
    x = positive_inputs(model)
    out = create_method("layercam", model, ["feat"], {"normalise": False}).explain(x, TopK(2))
    for b, k, a, v, _ in each_map(model, x, out.targets):
        expected = np.maximum((np.maximum(v, 0) * a).sum(axis=0), 0)
        np.testing.assert_allclose(out.maps["feat"][b, k].numpy(), expected, rtol=1e-4, atol=1e-6)


def test_layercam_gamma_is_the_papers_tanh_scaling() -> None:
    model = LinearHead().eval()
    x = positive_inputs(model)
    plain = raw_maps("layercam", model, x, TopK(1)).double()
    scaled = raw_maps("layercam", model, x, TopK(1), gamma=2.0).double()
    top = plain.flatten(2).amax(-1)[..., None, None]
    torch.testing.assert_close(scaled, torch.tanh(2 * plain / top), rtol=1e-5, atol=1e-6)


def test_the_variants_differ_from_gradcam_where_the_papers_say() -> None:
    """On a linear head Grad-CAM's averaged weights and the position-wise variants disagree."""
    model = LinearHead().eval()
    x = positive_inputs(model)
    base = raw_maps("gradcam", model, x, TopK(1))
    for name in ("xgradcam", "layercam", "hirescam"):
        assert not torch.allclose(raw_maps(name, model, x, TopK(1)), base, atol=1e-3), name


# --- Eigen-CAM -----------------------------------------------------------------------------------


def rank_one(scale: Tensor, pattern: Tensor, offset: Tensor) -> Tensor:
    """(C,), (h, w), (C,) -> one image's activations A_k = scale_k * pattern + offset_k, (1, C, h, w)."""
    return (scale[:, None, None] * pattern + offset[:, None, None])[None]


def test_eigencam_of_rank_one_activations_is_the_centred_pattern() -> None:
    g = torch.Generator().manual_seed(3)
    pattern, offset = torch.rand(5, 6, generator=g), torch.rand(4, generator=g)
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0])
    acts = rank_one(scale, pattern, offset)
    model = LinearHead().eval()
    maps = raw_maps("eigencam", model, acts, TopK(3))
    expected = torch.relu(scale.norm() * (pattern - pattern.mean()))  # M v1 with v1 = scale / |scale|
    for k in range(3):  # class-agnostic: every target gets the same map
        torch.testing.assert_close(maps[0, k], expected, rtol=1e-4, atol=1e-5)


def test_eigencam_orientation_follows_the_summed_activations_not_the_svd_sign(monkeypatch) -> None:
    g = torch.Generator().manual_seed(4)
    pattern, offset = torch.rand(5, 6, generator=g), torch.rand(4, generator=g)
    scale = -torch.tensor([1.0, 2.0, 0.5, 3.0])  # the channels fire together where the pattern is LOW
    acts = rank_one(scale, pattern, offset) + 0.01 * torch.rand(1, 4, 5, 6, generator=g)
    proj = principal_projection(acts)[0]
    total = acts[0].sum(0)
    assert float(((proj - proj.mean()) * (total - total.mean())).sum()) > 0  # positive where A fires
    eigh = torch.linalg.eigh

    def flipped(gram: Tensor):  # the other, equally valid, sign of every eigenvector
        values, vectors = eigh(gram)
        return values, -vectors

    monkeypatch.setattr(torch.linalg, "eigh", flipped)
    torch.testing.assert_close(principal_projection(acts)[0], proj)
    tall = acts.repeat(1, 10, 1, 1)  # 40 channels > 30 positions: the other Gram matrix
    torch.testing.assert_close(principal_projection(tall)[0], proj * 10**0.5, rtol=1e-4, atol=1e-5)


def test_eigencam_projection_equals_the_svd_up_to_sign() -> None:
    for shape in ((2, 16, 3, 4), (2, 5, 6, 7)):  # fewer positions than channels, and more
        acts = torch.rand(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        m = acts.flatten(2).transpose(1, 2)
        m = m - m.mean(dim=1, keepdim=True)
        _, _, vh = torch.linalg.svd(m, full_matrices=False)
        ref = (m @ vh[:, 0, :, None])[..., 0].view(shape[0], *shape[2:])
        ours = principal_projection(acts).double()
        sign = torch.sign((ours * ref).sum(dim=(1, 2)))[:, None, None]
        torch.testing.assert_close(ours, ref * sign, rtol=1e-4, atol=1e-5)


def test_eigencam_needs_no_gradients() -> None:
    model = LinearHead().eval()
    x = positive_inputs(model)
    with torch.no_grad(), torch.inference_mode():
        maps = create_method("eigencam", model, ["feat"]).explain(x, TopK(2)).maps["feat"]
    assert maps.shape == (3, 2, 5, 6) and maps.max() == 1


# --- Ablation-CAM --------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
def test_ablationcam_weights_are_relative_score_drops(chunk_size: int) -> None:
    """Zeroing channel k of a linear head's input removes sum_ij V_k A_k from the logit."""
    model = LinearHead().eval()
    x = positive_inputs(model)
    out = create_method("ablationcam", model, ["feat"], {"normalise": False, "chunk_size": chunk_size}
                        ).explain(x, TopK(2))
    for b, k, a, v, logit in each_map(model, x, out.targets):
        weights = (v * a).sum(axis=(1, 2)) / logit  # (y - y_k) / y
        expected = np.maximum(np.einsum("k,kij->ij", weights, a), 0)
        np.testing.assert_allclose(out.maps["feat"][b, k].numpy(), expected, rtol=1e-4, atol=1e-5)


class SkipAround(nn.Module):
    """conv -> ``feat`` -> + conv output (a skip connection from below the layer) -> pool -> linear; with
    ``batch_view`` the head reshapes with the batch size read before the layer, as some models do."""

    def __init__(self, batch_view: bool = False):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.feat = nn.ReLU()
        self.fc = nn.Linear(6, 4)
        self.batch_view = batch_view

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        h = self.conv(x)
        out = self.feat(h)
        if self.batch_view:
            return self.fc(out.mean(dim=(2, 3))).reshape(b, -1)
        return self.fc((out + h).mean(dim=(2, 3)))


def ablation_by_hand(model: nn.Module, layer: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    """(B, K, h, w) Ablation-CAM, one full forward pass per image and channel (pytorch-grad-cam's way)."""
    acts = {}
    handle = layer.register_forward_hook(lambda _m, _i, o: acts.setdefault("a", o.detach().clone()))
    with torch.no_grad():
        clean = model(x).gather(1, targets)  # (B, K)
    handle.remove()
    a = acts["a"]
    b, c = a.shape[:2]
    weights = torch.zeros(b, c, targets.shape[1])
    for i in range(b):
        for k in range(c):
            def zero(_m, _i, o, k=k):
                o = o.clone()
                o[:, k] = 0
                return o
            handle = layer.register_forward_hook(zero)
            with torch.no_grad():
                weights[i, k] = (clean[i] - model(x[i : i + 1])[0, targets[i]]) / clean[i]
            handle.remove()
    return torch.relu(torch.einsum("bck,bchw->bkhw", weights, a))


@pytest.mark.parametrize("batch_view", [False, True])
@pytest.mark.parametrize("chunk_size", [6, 7, 18])  # one image per chunk, two images, and all rows at once
def test_ablationcam_with_a_skip_around_the_layer_equals_the_full_ablation(batch_view: bool,
                                                                           chunk_size: int) -> None:
    model = SkipAround(batch_view).eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    method = create_method("ablationcam", model, ["feat"], {"normalise": False, "chunk_size": chunk_size})
    out = method.explain(x, TopK(2))
    torch.testing.assert_close(out.maps["feat"], ablation_by_hand(model, model.feat, x, out.targets),
                               rtol=1e-4, atol=1e-5)


def test_ablationcam_runs_the_network_below_the_layer_once_per_image_and_chunk() -> None:
    class Counting(LinearHead):
        def __init__(self) -> None:
            super().__init__()
            self.rows_below = 0

        def forward(self, x: Tensor) -> Tensor:
            self.rows_below += x.shape[0]
            return super().forward(x)

    model = Counting().eval()
    x = positive_inputs(model, b=2)  # 2 images x 4 channels = 8 ablated rows
    create_method("ablationcam", model, ["feat"], {"chunk_size": 8}).explain(x, TopK(1))
    assert model.rows_below == 2 + 2  # the clean forward pass, then one chunk holding both images


def test_ablationcam_zero_score_gives_zero_weights() -> None:
    model = LinearHead().eval()
    with torch.no_grad():
        model.head.bias.zero_()
    x = torch.zeros(1, *model.shape)  # every logit, clean or ablated, is exactly 0: 0 / 0
    maps = raw_maps("ablationcam", model, x, torch.tensor([[0]]))
    assert torch.isfinite(maps).all() and float(maps.abs().max()) == 0


# --- FullGrad ------------------------------------------------------------------------------------


class BiasNet(nn.Module):
    """conv(bias) -> BN -> ReLU -> conv(bias) -> ReLU -> pool -> linear: three bias layers."""

    def __init__(self, affine: bool = True, seed: int = 7):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, affine=affine)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            self.bn1.running_mean.uniform_(-0.3, 0.3, generator=g)
            self.bn1.running_var.uniform_(0.5, 1.5, generator=g)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return self.fc(F.relu(self.conv2(h)).mean(dim=(2, 3)))


def fullgrad_by_hand(model: BiasNet, x: Tensor, target: Tensor, per_channel: bool = True,
                     eps: float = 1e-7) -> Tensor:
    """Eq. of the paper with autograd hooks: |grad_x * x| plus |grad_z * b| of conv1, bn1, conv2."""
    leaf = x.clone().requires_grad_(True)
    outs = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: outs.setdefault(n, o))
             for n, m in (("conv1", model.conv1), ("bn1", model.bn1), ("conv2", model.conv2))]
    score = model(leaf).gather(1, target[:, None]).sum()
    for h in hooks:
        h.remove()
    grads = torch.autograd.grad(score, [leaf, outs["conv1"], outs["bn1"], outs["conv2"]])
    bn = model.bn1
    bn_bias = -bn.running_mean / torch.sqrt(bn.running_var + bn.eps)
    if bn.affine:
        bn_bias = bn_bias * bn.weight + bn.bias
    parts = [grads[0] * leaf, grads[1] * model.conv1.bias.view(1, -1, 1, 1),
             grads[2] * bn_bias.view(1, -1, 1, 1), grads[3] * model.conv2.bias.view(1, -1, 1, 1)]
    total = 0
    for part in parts:
        part = part.detach().abs()
        flat = part.flatten(2) if per_channel else part.flatten(1)[:, None]
        flat = flat - flat.amin(-1, keepdim=True)
        flat = flat / (flat.amax(-1, keepdim=True) + eps)
        summed = flat.view_as(part).sum(1, keepdim=True)
        total = total + F.interpolate(summed, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return total[:, 0]


@pytest.mark.parametrize("rescale", ["channel", "layer"])
def test_fullgrad_equals_the_papers_sum_of_rescaled_parts(rescale: str) -> None:
    model = BiasNet().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    method = create_method("fullgrad", model, options={"normalise": False, "rescale": rescale})
    out = method.explain(x, TopK(2))
    assert set(out.maps) == {None}
    for k in range(2):
        expected = fullgrad_by_hand(model, x, out.targets[:, k], per_channel=rescale == "channel")
        torch.testing.assert_close(out.maps[None][:, k], expected, rtol=1e-4, atol=1e-5)


def test_fullgrad_reads_every_conv_and_batch_norm_bias_and_ignores_layers() -> None:
    model = BiasNet().eval()
    assert [n for n, _ in bias_layers(model)] == ["conv1", "bn1", "conv2"]
    method = create_method("fullgrad", model, ["conv2"])  # layers given: ignored
    assert method.layers_read() == ["conv1", "bn1", "conv2"]
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(method.explain(x, TopK(1)).maps[None],
                               create_method("fullgrad", model).explain(x, TopK(1)).maps[None])


@pytest.mark.parametrize("affine", [True, False])
def test_fullgrad_batch_norm_bias_is_its_eval_mode_shift(affine: bool) -> None:
    """A bias-free conv followed by BN is the same function as one conv with the BN's shift as bias, and
    (per-channel rescaling) FullGrad gives the same map for both."""
    model = BiasNet(affine).eval()
    with torch.no_grad():
        model.conv1.bias.zero_()
    model.conv1.bias = None
    bn = model.bn1
    scale = torch.rsqrt(bn.running_var + bn.eps) * (bn.weight if affine else 1)
    folded = BiasNet(affine).eval()
    with torch.no_grad():
        folded.conv1.weight.copy_(model.conv1.weight * scale.view(-1, 1, 1, 1))
        folded.conv1.bias.copy_(effective_bias(bn))
        folded.conv2.load_state_dict(model.conv2.state_dict())
        folded.fc.load_state_dict(model.fc.state_dict())
    folded.bn1 = nn.Identity()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    a = create_method("fullgrad", model).explain(x, TopK(2)).maps[None]
    b = create_method("fullgrad", folded).explain(x, TopK(2)).maps[None]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_fullgrad_layers_stay_unfolded_in_the_engine(tmp_path, write_config, tiny_cnn_factory_file) -> None:
    from xaicli.config import load_config
    from xaicli.engine import Explainer

    cfg = {"model": {"source": "python", "factory": f"{tiny_cnn_factory_file}:build"},
           "preprocess": {"size": [16, 20], "mode": "RGB", "mean": [0.5], "std": [0.25]},
           "run": {"device": "cpu", "batch_size": 2, "workers": 1}}
    folding = Explainer(load_config(write_config(tmp_path, {**cfg, "methods": [{"name": "gradcam"}]})),
                        fold_batchnorms=True)
    assert folding.folded  # the tiny CNN's conv + batch-norm pairs fold for Grad-CAM ...
    path = write_config(tmp_path, {**cfg, "methods": [{"name": "fullgrad"}]}, name="fullgrad.yaml")
    explainer = Explainer(load_config(path), fold_batchnorms=True)
    assert explainer.folded == []  # ... but not for FullGrad, which reads their biases separately
    assert {"features.0.conv", "features.0.bn"} <= set(explainer.hooked_layers)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("kind", ["trace", "script"])
def test_fullgrad_on_a_torchscript_model_equals_eager(kind: str) -> None:
    """Through xaicli's TorchScript proxy the bias layers are found by the class they were compiled from,
    and a traced batch norm's shift (its eps lives only in the graph) is read off the module itself."""
    from xaicli.models.torchscript import hookable

    model = BiasNet().eval()
    with torch.no_grad():
        model.bn1.eps = 0.3  # not the default: a formula with the default eps would be wrong
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(10))
    proxy = hookable(torch.jit.trace(model, x) if kind == "trace" else torch.jit.script(model))
    assert [n for n, _ in bias_layers(proxy)] == ["conv1", "bn1", "conv2"]
    bn = model.bn1
    torch.testing.assert_close(effective_bias(dict(proxy.named_modules())["bn1"]),
                               bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + 0.3))
    expected = create_method("fullgrad", model).explain(x, TopK(2)).maps[None]
    torch.testing.assert_close(create_method("fullgrad", proxy).explain(x, TopK(2)).maps[None], expected)
