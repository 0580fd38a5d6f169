"""The reference implementations of the metric rows, used as their authors and documentation show.

* :func:`rise_deletion_insertion`: the RISE authors' ``CausalMetric`` (github.com/eclique/RISE,
  ``evaluation.py``), transcribed: ``gkern`` (``gaussian_filter`` of a delta, klen 11, sigma 5), the blur
  ``conv2d(x, kern, padding=klen // 2)``, ``single_run`` for one image at a time with one forward pass
  per step (the model wrapped with a softmax, as in their notebook), and ``auc``. Their order is
  ``np.flip(np.argsort(...))``; here the stable sort of the negated map (the issue's tie rule; the
  benchmark's maps have no ties, so both give the same order).
* :func:`quantus_pixel_flipping`: ``quantus.PixelFlipping(features_in_step=..., perturb_baseline=0.0)``
  (0 = the normalised mean, as RISE's and xaicli's default substrate).
* :func:`pgc_road`: pytorch-grad-cam's ``ROADMostRelevantFirstAverage`` / ``ROADLeastRelevantFirstAverage``
  protocol with ``NoisyLinearImputer(noise=0)`` and ``ClassifierOutputSoftmaxTarget``.
* :func:`quantus_mprt`: ``quantus.MPRT()`` (top-down cascade; Quantus seeds each layer with seed + 1,
  so ``seed=41`` randomises like xaicli's default 42) with pytorch-grad-cam's ``GradCAM`` as
  ``explain_func`` (plus a 1e-6 jitter: Quantus refuses the all-zero maps of a randomised model).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gkern(klen: int, nsig: float, channels: int) -> Tensor:
    """RISE ``evaluation.py``: a Gaussian kernel from ``gaussian_filter`` of a delta, one per channel."""
    from scipy.ndimage import gaussian_filter

    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    kern = np.zeros((channels, channels, klen, klen))
    for c in range(channels):
        kern[c, c] = k
    return torch.from_numpy(kern.astype("float32"))


def rise_auc(arr: np.ndarray) -> float:
    return float((arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1))


def single_run(model: nn.Module, img_tensor: Tensor, explanation: np.ndarray, mode: str, step: int,
               substrate_fn) -> np.ndarray:
    """RISE ``CausalMetric.single_run`` (without the plotting): one forward pass per step."""
    _, c, h, w = img_tensor.shape
    hw = h * w
    with torch.no_grad():
        pred = torch.softmax(model(img_tensor), dim=1)
    _, cls = torch.max(pred, 1)
    n_steps = (hw + step - 1) // step
    if mode == "del":
        start, finish = img_tensor.clone(), substrate_fn(img_tensor)
    else:
        start, finish = substrate_fn(img_tensor), img_tensor.clone()
    scores = np.empty(n_steps + 1)
    salient_order = np.argsort(-explanation.reshape(-1, hw), axis=1, kind="stable")
    for i in range(n_steps + 1):
        with torch.no_grad():
            pred = torch.softmax(model(start), dim=1)
        scores[i] = float(pred[0, cls[0]])
        if i < n_steps:
            coords = salient_order[:, step * i : step * (i + 1)]
            start.numpy().reshape(1, c, hw)[0, :, coords] = finish.numpy().reshape(1, c, hw)[0, :, coords]
    return scores


def rise_deletion_insertion(model: nn.Module, x: Tensor, maps: Tensor, targets: Tensor, steps: int = 100
                            ) -> dict[str, list[float]]:
    """Deletion and insertion AUC of each image, one image at a time (RISE's evaluation loop; their
    class is the top-1 prediction, which is what the benchmark's maps explain: ``targets`` is unused)."""
    c, h, w = x.shape[1:]
    step = -(-h * w // steps)
    kern = gkern(11, 5, c)
    blur = lambda t: F.conv2d(t, kern, padding=11 // 2)  # noqa: E731
    out: dict[str, list[float]] = {"deletion": [], "insertion": []}
    x = x.detach().cpu().contiguous()
    for i in range(x.shape[0]):
        explanation = maps[i].detach().cpu().numpy()
        out["deletion"].append(rise_auc(single_run(model, x[i : i + 1].clone(), explanation, "del", step,
                                                   torch.zeros_like)))
        out["insertion"].append(rise_auc(single_run(model, x[i : i + 1].clone(), explanation, "ins", step,
                                                    blur)))
    return out


def quantus_pixel_flipping(model: nn.Module, x: Tensor, maps: Tensor, targets: Tensor, step: int
                           ) -> np.ndarray:
    """Quantus' per-step probabilities (n_images, C*H*W / step)."""
    import quantus

    metric = quantus.PixelFlipping(features_in_step=step, perturb_baseline=0.0, disable_warnings=True)
    return np.asarray(metric(model=model, x_batch=x.detach().cpu().numpy(), y_batch=targets.cpu().numpy(),
                             a_batch=maps.detach().cpu().numpy(), device=str(x.device)))


def pgc_road(model: nn.Module, x: Tensor, maps: Tensor, targets: Tensor) -> dict[str, np.ndarray]:
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        AveragerAcrossThresholds,
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    cams = maps.detach().cpu().numpy()
    tgts = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    out = {}
    for name, remove in (("road_morf", RemoveMostRelevantFirst), ("road_lerf", RemoveLeastRelevantFirst)):
        averager = AveragerAcrossThresholds(
            lambda p, remove=remove: PerturbationConfidenceMetric(remove(p, NoisyLinearImputer(noise=0))))
        out[name] = averager(x, cams, tgts, model)
    return out


def quantus_mprt(model: nn.Module, x: Tensor, targets: Tensor, maps: Tensor, layer: str) -> dict:
    """Quantus' cascading MPRT of pytorch-grad-cam Grad-CAM maps at ``layer``: {layer name: scores}."""
    import quantus
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_kw) -> np.ndarray:
        module = dict(model.named_modules())[layer]
        with GradCAM(model=model, target_layers=[module]) as cam:
            out = cam(input_tensor=torch.as_tensor(inputs), targets=[ClassifierOutputTarget(int(t))
                                                                      for t in np.ravel(targets)])
        # Quantus refuses an all-zero batch (a randomised model's Grad-CAM often is): the same 1e-6
        # jitter as the maps under test, seeded
        return out[:, None] + 1e-6 * np.random.default_rng(0).random(out[:, None].shape, dtype=np.float32)

    metric = quantus.MPRT(seed=41, disable_warnings=True)
    return metric(model=model, x_batch=x.detach().cpu().numpy(), y_batch=targets.cpu().numpy(),
                  a_batch=maps.detach().cpu().numpy(), explain_func=explain, device=str(x.device))
