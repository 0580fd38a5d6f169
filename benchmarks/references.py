"""The reference implementations the benchmark compares against: pytorch-grad-cam and Captum.

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

PGC_CLASSES = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus", "scorecam": "ScoreCAM",
               "xgradcam": "XGradCAM", "layercam": "LayerCAM", "hirescam": "HiResCAM", "eigencam": "EigenCAM",
               "ablationcam": "AblationCAM", "fullgrad": "FullGrad"}
CAPTUM_METHODS = ("saliency", "guided_backprop", "deconvnet", "guided_gradcam", "integrated_gradients",
                  "smoothgrad", "input_x_gradient", "gradient_shap", "deeplift")

IMPLEMENTED_BY: dict[str, str] = {**dict.fromkeys(PGC_CLASSES, PGC), **dict.fromkeys(CAPTUM_METHODS, CAPTUM)}
"""xaicli method name -> the reference library that implements it (adapters below)."""


def reference_available(library: str) -> bool:
    return importlib.util.find_spec(library) is not None


@dataclass
class Reference:
    """One reference method bound to a model: ``run`` is timed, ``to_maps`` is not."""

    name: str
    run: Callable[[Tensor, Tensor], object]  # (normalised x (B, C, H, W), targets (B,)) -> raw output
    to_maps: Callable[[object], Tensor]  # raw output -> (B, H, W) float maps on the CPU
    close: Callable[[], None] = lambda: None


def _pgc(kind: str, model: nn.Module, layer: nn.Module | None) -> Reference:
    import pytorch_grad_cam as pgc
    import pytorch_grad_cam.ablation_cam as ablation_cam
    import pytorch_grad_cam.score_cam as score_cam
    import tqdm

    # ScoreCAM and AblationCAM draw a progress bar per image; keep the bar's code path, silence its output
    score_cam.tqdm = ablation_cam.tqdm = SimpleNamespace(tqdm=functools.partial(tqdm.tqdm, disable=True))

    cls = getattr(pgc, PGC_CLASSES[kind])
    cam = cls(model=model, target_layers=[layer] if layer is not None else [])
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


def make_reference(kind: str, model: nn.Module, layer: nn.Module | None, **captum_args) -> Reference | None:
    """The reference for xaicli method ``kind`` (None when there is none or its library is missing).
    ``captum_args`` (``baseline`` and ``top``: the normalised raw 0 and 1 per channel, (1, C, 1, 1);
    ``stdev``, ``chunk_size``, ``reduce``) go to the Captum adapter."""
    library = reference_library(kind)
    if library is None or not reference_available(library):
        return None
    return _pgc(kind, model, layer) if library == PGC else _captum(kind, model, layer, **captum_args)


def reference_library(kind: str) -> str | None:
    """The library implementing xaicli method ``kind`` (:data:`IMPLEMENTED_BY`), None when none does."""
    return IMPLEMENTED_BY.get(kind)
