"""The library entry: evaluate maps on tensors, with or without an explainer.

Two calls, one per level:

* :func:`evaluate` - with an explainer (``xaicli.engine.Explainer``: model, preprocessing, methods) and
  what it returned for a batch of display images (``explain_images``): every configured (method, layer)
  scored by every metric, the maps recomputed exactly as the explainer made them where a metric needs
  that (MPRT, random logit, max-sensitivity), the input range taken from the model's preprocessing::

      from xaicli.engine import Explainer, explain_images
      from xaicli.metrics import evaluate

      explainer = Explainer(load_config("configs/fashion_mnist.yaml"))
      result = explain_images(explainer, images)                 # images: (B, 1, 28, 28) in [0, 1]
      scores = evaluate(explainer, images, result, ["deletion", "insertion", "mprt"])
      scores[("deletion", "gradcam", "features.1.bn")].values    # (B, 3): one AUC per image x target
      scores[("mprt", "gradcam", "features.1.bn")].values        # (B, 3, stages): Spearman per stage

* :func:`evaluate_maps` - with any model and normalised inputs, for maps made elsewhere::

      evaluate_maps(model, x, maps, targets, ["deletion", "sparseness"], input_range=(lo, hi))

The explainer is used through its attributes only (``loaded.model``, ``normalise``, ``input_range``,
``functional_relu``, ``methods``, ``batching``), so this module does not import the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from torch import Tensor, nn

from xaicli.methods import InputRange
from xaicli.metrics.base import DEFAULT_CHUNK, MapSource, MetricInput, MetricResult
from xaicli.metrics.registry import create_metric

ScoreKey = tuple[str, str, str | None]
"""(metric, method, layer)."""


class _Planned(Protocol):
    name: str
    layers: list[str | None]
    options: dict


class ExplainerLike(Protocol):
    """What :func:`evaluate` reads from an explainer (``xaicli.engine.Explainer`` has all of it)."""

    input_range: InputRange
    functional_relu: bool
    methods: Sequence[_Planned]

    def normalise(self, images: Tensor) -> Tensor: ...


class ExplanationsLike(Protocol):
    """What :func:`evaluate` reads from a result (``xaicli.engine.Explanations`` has all of it)."""

    targets: Tensor
    probs: Tensor
    maps: Mapping[tuple[str, str | None], Tensor]


def metric_chunk(explainer: Any) -> int:
    """Model inputs per forward pass for metrics: the engine's CPU micro-batch (cache-sized), else a
    large GPU batch."""
    batching = explainer.batching
    return batching.micro_batch or max(batching.batch_size, DEFAULT_CHUNK)


def map_source(explainer: Any, method: str, layer: str | None) -> MapSource:
    """How ``explainer`` made the maps of (method, layer): to recompute them the same way."""
    pm = next(p for p in explainer.methods if p.name == method)
    return MapSource(method, layer, dict(pm.options), explainer.input_range, explainer.functional_relu,
                     explainer.batching.chunk_size(method))


def evaluate(explainer: ExplainerLike, images: Tensor, explanations: ExplanationsLike,
             metrics: Sequence[str] = ("deletion", "insertion"), *,
             options: Mapping[str, Mapping[str, Any]] | None = None, masks: Tensor | None = None,
             ids: Tensor | None = None) -> dict[ScoreKey, MetricResult]:
    """Score every (method, layer) of ``explanations`` with every metric in ``metrics``.

    images: (B, C, H, W) display images in [0, 1] (what ``explain_images`` was given); explanations:
    its result; options: per-metric options, e.g. ``{"deletion": {"steps": 50}}``; masks: (B, H, W) bool
    object masks for the localisation metrics; ids: (B,) stable image numbers that seed per-image
    randomness (default 0..B-1). Returns ``{(metric, method, layer): MetricResult}`` on the CPU.
    """
    created = {name: create_metric(name, (options or {}).get(name)) for name in metrics}
    x = explainer.normalise(images)
    model = explainer.loaded.model  # type: ignore[attr-defined]
    chunk = metric_chunk(explainer)
    out: dict[ScoreKey, MetricResult] = {}
    for (method, layer), maps in explanations.maps.items():
        inp = MetricInput(model, x, maps, explanations.targets, explainer.input_range,
                          map_source(explainer, method, layer), masks, ids, explanations.probs, chunk)
        for name, metric in created.items():
            out[(name, method, layer)] = metric(inp)
    return out


def evaluate_maps(model: nn.Module, x: Tensor, maps: Tensor, targets: Tensor, metrics: Sequence[str], *,
                  input_range: InputRange | None = None, source: MapSource | None = None,
                  masks: Tensor | None = None, options: Mapping[str, Mapping[str, Any]] | None = None,
                  ids: Tensor | None = None, chunk_size: int = DEFAULT_CHUNK) -> dict[str, MetricResult]:
    """Score (B, K, H, W) ``maps`` of normalised inputs ``x`` (B, C, H, W) for ``targets`` (B, K).

    ``source`` (method, layer, options) is needed by the metrics that recompute maps; ``input_range``
    by deletion's ``black`` substrate. Returns ``{metric: MetricResult}`` on the CPU.
    """
    inp = MetricInput(model, x, maps, targets, input_range, source, masks, ids, None, chunk_size)
    return {name: create_metric(name, (options or {}).get(name))(inp) for name in metrics}
