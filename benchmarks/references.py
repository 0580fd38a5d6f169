"""The reference implementations the benchmark compares against: pytorch-grad-cam, Captum and torchcam.

Which library implements which xaicli method is declared once, in :data:`IMPLEMENTED_BY`; a registered
method not named there gets an xaicli-only row. Both libraries are optional: :func:`reference_available`
says whether one imports; the suite skips its reference columns with a note otherwise.

Each :class:`Reference` is used the way that library's documentation shows, with its defaults, on a
normalised input tensor on the model's device:

* pytorch-grad-cam: ``with GradCAM(model=model, target_layers=[layer]) as cam: cam(input_tensor=x,
  targets=None)`` (top-1 targets, chosen by the library from its own forward pass). ScoreCAM keeps its
  default inner batch of 16 masked images, AblationCAM its 32 ablated copies; their per-image tqdm bars
  are created with ``disable=True``. FullGrad gets no target layers (it uses every bias layer).
* Captum: ``Saliency``, ``GuidedBackprop``, ``Deconvolution``, ``GuidedGradCam``,
  ``IntegratedGradients`` (50 steps, Captum's ``internal_batch_size`` equal to xaicli's ``chunk_size``)
  and ``NoiseTunnel(Saliency)`` (25 samples, ``nt_samples_batch_size`` giving the same rows per pass as
  xaicli's ``chunk_size``), ``InputXGradient``, ``DeepLift`` (black baseline; torchvision ResNets get
  one ReLU module per call, which Captum's DeepLift requires: :func:`one_relu_per_call`) and
  ``GradientShap`` (25 samples from 25 uniform-noise baselines in the input range; it has no inner batch
  size, so each call gets ``chunk_size // 25`` images, the same rows per pass as xaicli). Captum needs
  explicit targets: they are computed once, outside the timed call, which favours Captum by one forward
  pass per batch.
* torchcam: ``LeGrad(model, list(model.encoder.layers))`` on torchvision's ViT (every block, as xaicli's
  default), called with the batch's targets after its own forward pass.
* Grad-CAM on a ViT (the ``gradcam_vit`` row): pytorch-grad-cam's ``GradCAM`` with the
  ``reshape_transform`` its README documents for ViTs (class token dropped, tokens folded to the grid).

* Captum's perturbation methods (:func:`perturbation_references`): ``Occlusion`` (xaicli's window and
  stride, baseline 0 = xaicli's ``fill: mean``), ``FeatureAblation``, ``Lime`` and ``KernelShap`` (1,000
  samples) on the same SLIC superpixels, computed inside the timed call as a user would (Lime and
  KernelShap one image per call, as Captum recommends; Lime with lime's kernel in the interpretable
  space as its ``similarity_func`` and ``SkLearnRidge(alpha)``, so the agreement column compares the same
  estimator with different random samples). One reference per ``perturbations_per_eval`` in
  :data:`PERTURBATIONS_PER_EVAL`; the suite keeps the fastest ("its best perturbations_per_eval").
* RISE (:class:`RisePaperCode`): the authors' ``explanations.py`` (github.com/eclique/RISE) as a
  straightforward batched PyTorch implementation: 2,000 masks generated once with NumPy and
  scikit-image's ``resize`` (not timed, like their ``generate_masks``/``load_masks``), then per image
  ``masks * x`` in batches of ``gpu_batch`` = 100, softmax, and the target's row of ``p^T masks / N / p``.

Only the library call is timed; turning Captum's raw attributions into maps for the agreement column
(:meth:`Reference.to_maps`) happens afterwards.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import Tensor, nn

PGC = "pytorch_grad_cam"
CAPTUM = "captum"
PAPER_CODE = "paper code"
"""The "library" of a reference written out here from a paper's published code (RISE)."""
TORCHCAM = "torchcam"

PGC_CLASSES = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus", "scorecam": "ScoreCAM",
               "xgradcam": "XGradCAM", "layercam": "LayerCAM", "hirescam": "HiResCAM", "eigencam": "EigenCAM",
               "ablationcam": "AblationCAM", "fullgrad": "FullGrad"}
CAPTUM_METHODS = ("saliency", "guided_backprop", "deconvnet", "guided_gradcam", "integrated_gradients",
                  "smoothgrad", "input_x_gradient", "gradient_shap", "deeplift")

CAPTUM_PERTURBATION = {"occlusion": "Occlusion", "feature_ablation": "FeatureAblation", "lime": "Lime",
                       "kernel_shap": "KernelShap"}
PERTURBATIONS_PER_EVAL = (16, 64, 128)
"""Captum's ``perturbations_per_eval`` candidates for the perturbation rows; the fastest is used."""

IMPLEMENTED_BY: dict[str, str] = {**dict.fromkeys(PGC_CLASSES, PGC), **dict.fromkeys(CAPTUM_METHODS, CAPTUM),
                                  **dict.fromkeys(CAPTUM_PERTURBATION, CAPTUM), "rise": PAPER_CODE,
                                  "legrad": TORCHCAM}
"""xaicli method name -> the reference library that implements it (adapters below)."""


def reference_available(library: str) -> bool:
    return library == PAPER_CODE or importlib.util.find_spec(library) is not None


@dataclass
class Reference:
    """One reference method bound to a model: ``run`` is timed, ``to_maps`` is not."""

    name: str
    run: Callable[[Tensor, Tensor], object]  # (normalised x (B, C, H, W), targets (B,)) -> raw output
    to_maps: Callable[[object], Tensor]  # raw output -> (B, H, W) float maps on the CPU
    close: Callable[[], None] = lambda: None


def vit_reshape_transform(grid: int, prefix: int = 1) -> Callable[[Tensor], Tensor]:
    """pytorch-grad-cam's documented ViT ``reshape_transform``: drop the class token, fold to the grid."""

    def reshape_transform(tensor: Tensor) -> Tensor:
        result = tensor[:, prefix:, :].reshape(tensor.size(0), grid, grid, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    return reshape_transform


def _torchcam_legrad(model: nn.Module, size: int) -> Reference:
    import torch.nn.functional as F
    from torchcam.methods import LeGrad

    # hooks on only during its own call: the suite's no_grad target pass must not reach them
    extractor = LeGrad(model, list(model.encoder.layers), enable_hooks=False)

    def run(x: Tensor, targets: Tensor) -> Tensor:
        extractor.enable_hooks()
        try:
            scores = model(x)
            return extractor([int(t) for t in targets], scores)[0]
        finally:
            extractor.disable_hooks()

    def to_maps(out: Tensor) -> Tensor:  # (B, h, w) at patch resolution -> input size, as xaicli's
        return F.interpolate(out.detach().float()[:, None], size=(size, size), mode="bilinear",
                             align_corners=False)[:, 0].cpu()

    return Reference(name="torchcam LeGrad (all blocks)", run=run, to_maps=to_maps,
                     close=extractor.remove_hooks)


def _pgc(kind: str, model: nn.Module, layer: nn.Module | None,
         reshape_transform: Callable[[Tensor], Tensor] | None = None) -> Reference:
    import pytorch_grad_cam as pgc
    import pytorch_grad_cam.ablation_cam as ablation_cam
    import pytorch_grad_cam.score_cam as score_cam
    import tqdm

    # ScoreCAM and AblationCAM draw a progress bar per image; keep the bar's code path, silence its output
    score_cam.tqdm = ablation_cam.tqdm = SimpleNamespace(tqdm=functools.partial(tqdm.tqdm, disable=True))

    cls = getattr(pgc, PGC_CLASSES[kind])
    cam = cls(model=model, target_layers=[layer] if layer is not None else [],
              reshape_transform=reshape_transform)
    return Reference(
        name=f"pytorch-grad-cam {cls.__name__}",
        run=lambda x, _targets: cam(input_tensor=x, targets=None),
        to_maps=lambda out: torch.from_numpy(out).float(),
        close=cam.activations_and_grads.release,
    )


def one_relu_per_call(model: nn.Module) -> nn.Module:
    """``model`` itself, or for a torchvision ResNet a copy whose blocks call a separate ReLU module at each
    use (the same function): Captum's DeepLift raises on a module that runs twice in one forward pass."""
    import copy
    import types

    from torchvision.models.resnet import BasicBlock, Bottleneck

    if not any(isinstance(m, (BasicBlock, Bottleneck)) for m in model.modules()):
        return model

    def basic(block: BasicBlock, x: Tensor) -> Tensor:
        identity = x if block.downsample is None else block.downsample(x)
        out = block.relu(block.bn1(block.conv1(x)))
        return block.relu_out(block.bn2(block.conv2(out)) + identity)

    def bottleneck(block: Bottleneck, x: Tensor) -> Tensor:
        identity = x if block.downsample is None else block.downsample(x)
        out = block.relu(block.bn1(block.conv1(x)))
        out = block.relu_mid(block.bn2(block.conv2(out)))
        return block.relu_out(block.bn3(block.conv3(out)) + identity)

    ref = copy.deepcopy(model)
    for block in ref.modules():
        if isinstance(block, (BasicBlock, Bottleneck)):
            block.relu_mid, block.relu_out = nn.ReLU(), nn.ReLU()
            block.forward = types.MethodType(basic if isinstance(block, BasicBlock) else bottleneck, block)
    return ref


def _captum(kind: str, model: nn.Module, layer: nn.Module | None, *, baseline: Tensor, top: Tensor,
            stdev: float, chunk_size: int, reduce: Callable[[Tensor], Tensor]) -> Reference:
    from captum import attr

    if kind == "saliency":
        algo, kwargs, label = attr.Saliency(model), {}, "Saliency"
    elif kind == "guided_backprop":
        algo, kwargs, label = attr.GuidedBackprop(model), {}, "GuidedBackprop"
    elif kind == "deconvnet":
        algo, kwargs, label = attr.Deconvolution(model), {}, "Deconvolution"
    elif kind == "guided_gradcam":
        algo, kwargs, label = attr.GuidedGradCam(model, layer), {}, "GuidedGradCam"
    elif kind == "integrated_gradients":
        algo, label = attr.IntegratedGradients(model), "IntegratedGradients(n_steps=50)"
        kwargs = {"n_steps": 50, "method": "riemann_trapezoid", "internal_batch_size": chunk_size}
    elif kind == "smoothgrad":
        algo, label = attr.NoiseTunnel(attr.Saliency(model)), "NoiseTunnel(Saliency, smoothgrad, 25)"
        kwargs = {"nt_type": "smoothgrad", "nt_samples": 25, "stdevs": stdev}
    elif kind == "input_x_gradient":
        algo, kwargs, label = attr.InputXGradient(model), {}, "InputXGradient"
    elif kind == "deeplift":
        algo, kwargs, label = attr.DeepLift(one_relu_per_call(model)), {}, "DeepLift"
    elif kind == "gradient_shap":
        algo, label = attr.GradientShap(model), "GradientShap(n_samples=25)"
        kwargs = {"n_samples": 25, "stdevs": 0.0}
    else:
        raise KeyError(kind)
    noise_baselines: list[Tensor] = []  # GradientShap's baseline distribution, made on first use

    def run(x: Tensor, targets: Tensor) -> Tensor:
        extra = dict(kwargs)
        if kind in ("integrated_gradients", "deeplift"):
            extra["baselines"] = baseline.expand_as(x)
        if kind == "smoothgrad":
            extra["nt_samples_batch_size"] = max(1, chunk_size // x.shape[0])
        if kind == "gradient_shap":
            if not noise_baselines:
                gen = torch.Generator(device=x.device).manual_seed(0)
                u = torch.rand((25, *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)
                noise_baselines.append(baseline + u * (top - baseline))
            step = max(1, chunk_size // 25)
            return torch.cat([algo.attribute(x[i : i + step], target=targets[i : i + step],
                                             baselines=noise_baselines[0], **extra)
                              for i in range(0, x.shape[0], step)])
        return algo.attribute(x, target=targets, **extra)

    return Reference(name=f"captum {label}", run=run, to_maps=lambda out: reduce(out.detach().float()).cpu())


def make_reference(kind: str, model: nn.Module, layer: nn.Module | None, *, size: int = 224,
                   reshape_transform: Callable[[Tensor], Tensor] | None = None,
                   **captum_args) -> Reference | None:
    """The reference for xaicli method ``kind`` (None when there is none or its library is missing).
    ``captum_args`` (``baseline`` and ``top``: the normalised raw 0 and 1 per channel, (1, C, 1, 1);
    ``stdev``, ``chunk_size``, ``reduce``) go to the Captum adapter; ``reshape_transform`` to
    pytorch-grad-cam (token layers); ``size`` is the input size (torchcam)."""
    library = reference_library(kind)
    if library is None or not reference_available(library):
        return None
    if library == PGC:
        return _pgc(kind, model, layer, reshape_transform)
    if library == TORCHCAM:
        return _torchcam_legrad(model, size)
    return _captum(kind, model, layer, **captum_args)


def reference_library(kind: str) -> str | None:
    """The library implementing xaicli method ``kind`` (:data:`IMPLEMENTED_BY`), None when none does."""
    return IMPLEMENTED_BY.get(kind)


# --- perturbation methods ------------------------------------------------------------------------------


def perturbation_references(kind: str, model: nn.Module, method, input_range: tuple[Tensor, Tensor]
                            ) -> list[Reference]:
    """The references of xaicli perturbation method ``kind``, aligned with the xaicli ``method`` instance
    (its window, superpixels, samples, kernel): one per Captum ``perturbations_per_eval`` candidate, or
    the RISE paper's code. ``to_maps`` post-processes like ``method``. Empty when the library is missing."""
    library = reference_library(kind)
    if library is None or not reference_available(library):
        return []

    def to_maps(out: Tensor) -> Tensor:  # (B, C, H, W) or (B, H, W) raw -> (B, H, W) like xaicli's maps
        raw = out.detach().float()
        raw = raw[:, :1] if raw.dim() == 4 else raw[:, None]
        return method.postprocess(raw)[:, 0].cpu()

    if library == PAPER_CODE:
        o = method.opts
        rise = RisePaperCode(model, o["masks"], o["grid"], o["p"], seed=o["seed"])
        return [Reference(name=f"RISE paper code, batched PyTorch ({o['masks']} masks, gpu_batch "
                               f"{rise.gpu_batch})", run=rise, to_maps=to_maps)]
    return [Reference(name=f"captum {CAPTUM_PERTURBATION[kind]} (perturbations_per_eval={ppe})",
                      run=_captum_perturbation(kind, model, method, input_range, ppe), to_maps=to_maps)
            for ppe in PERTURBATIONS_PER_EVAL]


def _captum_perturbation(kind: str, model: nn.Module, method, input_range: tuple[Tensor, Tensor],
                         ppe: int) -> Callable[[Tensor, Tensor], Tensor]:
    from captum import attr

    o = method.opts
    if kind == "occlusion":
        algo = attr.Occlusion(model)

        def occlusion(x: Tensor, targets: Tensor) -> Tensor:
            (wh, ww), (sh, sw) = method.geometry(*x.shape[-2:])
            c = x.shape[1]
            return algo.attribute(x, sliding_window_shapes=(c, wh, ww), strides=(c, sh, sw), target=targets,
                                  baselines=0.0, perturbations_per_eval=ppe)

        return occlusion
    if kind == "feature_ablation":
        ablation = attr.FeatureAblation(model)

        def feature_ablation(x: Tensor, targets: Tensor) -> Tensor:
            labels, _ = method.superpixels(x, input_range)  # SLIC per image, as a user would
            return ablation.attribute(x, target=targets, feature_mask=labels[:, None].long(),
                                      perturbations_per_eval=ppe)

        return feature_ablation
    if kind == "lime":
        from captum._utils.models.linear_model import SkLearnRidge

        algo = attr.Lime(model, interpretable_model=SkLearnRidge(alpha=o["alpha"]),
                         similarity_func=lambda _x, _p, z, **_kw: method.kernel(z.float()))
    else:
        algo = attr.KernelShap(model)

    def per_image(x: Tensor, targets: Tensor) -> Tensor:
        labels, _ = method.superpixels(x, input_range)
        return torch.cat([algo.attribute(x[i : i + 1], target=int(targets[i]), n_samples=o["samples"],
                                         feature_mask=labels[i : i + 1, None].long(),
                                         perturbations_per_eval=ppe)
                          for i in range(x.shape[0])])

    return per_image


class RisePaperCode:
    """RISE as the authors' ``explanations.py`` computes it, batched in PyTorch (module docstring).

    Masks (eq. 3 and the random shift): ``grid = rand(N, s, s) < p``; each grid is resized with
    ``skimage.transform.resize(order=1, mode="reflect", anti_aliasing=False)`` to ``(s + 1) * cell`` and
    cropped at a random offset in ``[0, cell)``. Saliency (eq. 6): ``p(target | masks * x)^T masks / N / p``,
    for the target class only (their code multiplies all 1,000 classes; one row is the fair comparison).
    """

    gpu_batch = 100  # the authors' default

    def __init__(self, model: nn.Module, n: int, s: int, p: float, seed: int = 0):
        self.model, self.n, self.s, self.p, self.seed = model, n, s, p, seed
        self.masks: Tensor | None = None  # (N, 1, H, W), made on the first call (input size known then)

    def generate_masks(self, size: tuple[int, int], device: torch.device) -> Tensor:
        import numpy as np
        from skimage.transform import resize

        rng = np.random.default_rng(self.seed)
        cell = np.ceil(np.array(size) / self.s).astype(int)
        up = (self.s + 1) * cell
        grid = (rng.random((self.n, self.s, self.s)) < self.p).astype("float32")
        masks = np.empty((self.n, *size), dtype="float32")
        for i in range(self.n):
            dy, dx = rng.integers(0, cell[0]), rng.integers(0, cell[1])
            masks[i] = resize(grid[i], up, order=1, mode="reflect", anti_aliasing=False
                              )[dy : dy + size[0], dx : dx + size[1]]
        return torch.from_numpy(masks)[:, None].to(device)

    def prepare(self, x: Tensor) -> None:
        """Make the masks (not timed: the authors generate them once and load them from disk)."""
        if self.masks is None or tuple(self.masks.shape[-2:]) != tuple(x.shape[-2:]):
            self.masks = self.generate_masks(tuple(x.shape[-2:]), x.device)

    @torch.no_grad()
    def __call__(self, x: Tensor, targets: Tensor) -> Tensor:
        self.prepare(x)
        masks = self.masks
        h, w = x.shape[-2:]
        out = []
        for i in range(x.shape[0]):
            stack = torch.mul(masks, x[i : i + 1])  # (N, C, H, W)
            p = torch.cat([self.model(stack[j : j + self.gpu_batch]).softmax(dim=1)[:, int(targets[i])]
                           for j in range(0, self.n, self.gpu_batch)])  # (N,)
            out.append((p @ masks.view(self.n, h * w)).view(h, w) / self.n / self.p)
        return torch.stack(out)
