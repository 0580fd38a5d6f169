"""Evaluation metrics behind one registry: faithfulness, sanity checks, localisation, complexity and
robustness of saliency maps, on tensors (see :mod:`.base` for the contract, :mod:`.api` for the
one-call library entry).

Library use::

    from xaicli.metrics import evaluate
    scores = evaluate(explainer, images, result, ["deletion", "insertion", "mprt"])
    scores[("deletion", "gradcam", "features.1.bn")].values   # (B, K) areas under the curve
"""

from xaicli.metrics.api import evaluate, evaluate_maps
from xaicli.metrics.base import MapSource, Metric, MetricInput, MetricResult
from xaicli.metrics.registry import available_metrics, create_metric, get_metric, metrics_where, register

__all__ = ["MapSource", "Metric", "MetricInput", "MetricResult", "available_metrics", "create_metric",
           "evaluate", "evaluate_maps", "get_metric", "metrics_where", "register"]
