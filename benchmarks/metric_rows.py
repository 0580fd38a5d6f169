"""The metric rows of the benchmark (``xaicli bench -m deletion -m road -m mprt``): xaicli's metrics
against the reference implementations, on the same model, images and maps, in one process.

* ``deletion``: deletion + insertion at 100 steps against the RISE authors' ``CausalMetric.single_run``
  (one image, one step at a time; transcribed in :mod:`benchmarks.metric_references`), and deletion
  against Quantus 0.6's ``PixelFlipping`` (the whole batch one step at a time). Quantus flips *values*
  of the (C, H, W) input, ``features_in_step`` at a time, and needs that number to divide H x W: it is
  set to the divisor of H x W nearest to H x W / 100, and xaicli runs the same number of steps (the
  same forward passes per map). On a one-channel model (the bundled one) the two protocols then
  coincide exactly; on an RGB model Quantus' steps remove a third of a pixel's channels each.
* ``road``: ROAD MoRF + LeRF at the 9 percentiles against pytorch-grad-cam's ``ROADMostRelevantFirst``
  / ``ROADLeastRelevantFirst`` averages (``NoisyLinearImputer(noise=0)``, as the parity test, so the
  values can be compared; the noise does not change the cost).
* ``mprt``: the cascading MPRT of Grad-CAM maps against Quantus' ``MPRT`` with pytorch-grad-cam's
  ``GradCAM`` as its ``explain_func`` (what a Quantus user writes); both randomise the unfolded model.

The maps are Grad-CAM at the model's default layer, made once by xaicli and given to both sides, with
a seeded 1e-6 jitter: Grad-CAM's ReLU leaves many exact zeros, and tied pixels are ordered differently
by each library (Quantus' ``argsort`` is not even stable), which is not what is being compared. Each
row's note carries the largest difference of the values between the two sides (for MPRT, where the two
sides recompute their maps with different Grad-CAM implementations, the median as well).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from benchmarks.metric_references import (
    pgc_road,
    quantus_mprt,
    quantus_pixel_flipping,
    rise_deletion_insertion,
)
from benchmarks.references import PGC, reference_available

QUANTUS = "quantus"
METRIC_TARGETS = {"deletion": 5.0, "deletion-quantus": 5.0, "road": 5.0, "mprt": 3.0}


def quantus_step(height: int, width: int, steps: int = 100) -> int:
    """The divisor of H x W nearest to H x W / ``steps`` (Quantus needs ``features_in_step | H x W``)."""
    hw = height * width
    want = hw / steps
    divisors = [d for d in range(1, hw + 1) if hw % d == 0]
    return min(divisors, key=lambda d: (abs(d - want), d))


def unfolded_explainer(suite):
    """MPRT randomises the model's own modules: an explainer on an unfolded copy (the suite's model may
    have had its batch norms folded by an earlier row), as ``xaicli evaluate`` builds for MPRT."""
    import copy
    import dataclasses

    from benchmarks.suite import _config
    from xaicli.engine import Explainer

    loaded = dataclasses.replace(suite.loaded, model=copy.deepcopy(suite.ref_model))
    return Explainer(_config(suite.opts, "gradcam", {}), loaded, suite.device, fold_batchnorms=False,
                     functional_relu=True, emit_warnings=False)


def metric_rows(suite, name: str) -> list:
    """The rows of one metric row name (see the module docstring)."""
    from benchmarks.suite import Row, measure_pair

    opts = suite.opts
    explainer = suite.explainer("gradcam", {}) if name != "mprt" else unfolded_explainer(suite)
    h, w = explainer.loaded.size
    n = opts.images if h * w <= 64 * 64 else opts.heavy_images
    repeats = opts.repeats if h * w <= 64 * 64 else opts.heavy_repeats
    images = suite.images[:n]
    from xaicli.engine import explain_images
    from xaicli.metrics.api import map_source, metric_chunk

    result = explain_images(explainer, images)
    key = explainer.map_keys[0]
    jitter = 1e-6 * torch.rand(result.maps[key].shape, generator=torch.Generator().manual_seed(opts.seed))
    maps, targets = result.maps[key].float() + jitter.to(result.maps[key].device), result.targets
    x = suite.normalised(explainer, images)
    model, chunk = explainer.loaded.model, metric_chunk(explainer)
    rows: list = []

    def row(label: str, ta, tb, reference: str, target: float | None, note: str) -> Row:
        ratio = ta.rate / tb.rate if tb is not None else None
        return Row(label, opts.model, h, min(n, opts.batch), n, ta.rate, reference if tb else "-",
                   tb.rate if tb else None, ratio, f">= {target:g}x" if target else "",
                   (ratio >= target) if (target and ratio) else None, note=note,
                   seconds={"xaicli": ta.seconds, **({"reference": tb.seconds} if tb else {})})

    def ours(metrics: list[str], options: dict | None = None, source=None) -> Callable[[], dict]:
        from xaicli.metrics import evaluate_maps

        return lambda: evaluate_maps(model, x, maps, targets, metrics, input_range=explainer.input_range,
                                     source=source, options=options, chunk_size=chunk)

    if name == "deletion":
        fn = ours(["deletion", "insertion"])
        ref = lambda: rise_deletion_insertion(suite.ref_model, x, maps[:, 0], targets[:, 0], steps=100)  # noqa: E731
        ta, tb = measure_pair(fn, ref, n, repeats, suite.device)
        diff = max(float((ta.last[m].values[:, 0] - torch.tensor(tb.last[m])).abs().max())
                   for m in ("deletion", "insertion"))
        rows.append(row("deletion+insertion (100 steps)", ta, tb, "RISE authors' CausalMetric loop",
                        METRIC_TARGETS["deletion"], f"max |AUC difference| {diff:.1e}"))
        step = quantus_step(h, w)
        c = x.shape[1]
        n_steps = c * h * w // step
        if not reference_available(QUANTUS):
            suite.report.notes.append("deletion vs Quantus: quantus is not installed, row skipped")
            return rows
        fn = ours(["deletion"], {"deletion": {"steps": n_steps}})
        ref = lambda: quantus_pixel_flipping(suite.ref_model, x, maps, targets[:, 0], step)  # noqa: E731
        ta, tb = measure_pair(fn, ref, n, repeats, suite.device)
        ours_curves = ta.last["deletion"].fields["curve"][:, 0, 1:].numpy()
        note = (f"{n_steps} steps (Quantus: features_in_step={step} of C*H*W values); "
                + (f"max |curve difference| {np.abs(ours_curves - tb.last).max():.1e}" if c == 1 else
                   "RGB: Quantus removes single channel values, so the curves differ"))
        rows.append(row(f"deletion ({n_steps} steps)", ta, tb, "Quantus 0.6 PixelFlipping",
                        METRIC_TARGETS["deletion-quantus"], note))
    elif name == "road":
        if not reference_available(PGC):
            suite.report.notes.append("road: pytorch-grad-cam is not installed, reference skipped")
        fn = ours(["road_morf", "road_lerf"], {"road_morf": {"noise": 0.0}, "road_lerf": {"noise": 0.0}})
        ref = (lambda: pgc_road(suite.ref_model, x, maps[:, 0], targets[:, 0])) if reference_available(PGC) \
            else None
        ta, tb = measure_pair(fn, ref, n, repeats, suite.device)
        note = "9 percentiles each, noise 0"
        if tb is not None:
            diff = max(float(np.abs(ta.last[m].values[:, 0].numpy() - tb.last[m]).max())
                       for m in ("road_morf", "road_lerf"))
            note += f"; max |value difference| {diff:.1e}"
        rows.append(row("road MoRF+LeRF", ta, tb, "pytorch-grad-cam ROAD (spsolve per image)",
                        METRIC_TARGETS["road"], note))
    elif name == "mprt":
        source = map_source(explainer, *key)
        fn = ours(["mprt"], source=source)
        layer = key[1]
        have = reference_available(QUANTUS) and reference_available(PGC)
        if not have:
            suite.report.notes.append("mprt: quantus or pytorch-grad-cam is not installed, reference skipped")
        ref = (lambda: quantus_mprt(suite.ref_model, x, targets[:, 0], maps, layer)) if have else None
        ta, tb = measure_pair(fn, ref, n, repeats, suite.device)
        stages = len(ta.last["mprt"].stages)
        note = f"{stages} stages, Grad-CAM at {layer}"
        if tb is not None:
            theirs = np.array([tb.last[k] for k in tb.last if k != "original"]).T
            diff = np.abs(ta.last["mprt"].values[:, 0].numpy() - theirs)
            note += (f"; |Spearman difference| median {np.nanmedian(diff):.1e}, max {np.nanmax(diff):.1e} "
                     "(pytorch-grad-cam's Grad-CAM stretches near-flat maps of randomised models, "
                     "xaicli's zeroes them)")
        rows.append(row("mprt (cascading)", ta, tb, "Quantus 0.6 MPRT + pytorch-grad-cam GradCAM",
                        METRIC_TARGETS["mprt"], note))
    else:
        raise KeyError(name)
    return rows

