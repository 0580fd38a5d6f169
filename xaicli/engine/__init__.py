"""The engine: a model prepared once (:class:`Explainer`) and the one loop that streams images through it.

Library use, on tensors::

    from xaicli.config import config_from_dict
    from xaicli.engine import Explainer, explain_images

    explainer = Explainer(config_from_dict({"methods": [{"name": "gradcam"}], "targets": {"topk": 3}}))
    result = explain_images(explainer, images)   # images: (B, C, H, W) in [0, 1], any B
    result.maps[("gradcam", "features.1.bn")]    # (B, 3, H, W)

The engine imports nothing above it (no files, no rendering): what to do with results is the business
of the use cases in :mod:`xaicli.runs`.

The names below are imported on first use, so that :mod:`xaicli.engine.discover` (finding the inputs,
which the CLI does before anything else) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {"Explainer": "explainer", "ExplainedBatch": "results", "Explanations": "results",
          "MapKey": "results", "Slot": "results", "flat_maps": "results", "explain_images": "stream",
          "explain_items": "stream"}

__all__ = ["Explainer", "ExplainedBatch", "Explanations", "MapKey", "Slot", "explain_images", "explain_items",
           "flat_maps"]

if TYPE_CHECKING:
    from xaicli.engine.explainer import Explainer
    from xaicli.engine.results import ExplainedBatch, Explanations, MapKey, Slot, flat_maps
    from xaicli.engine.stream import explain_images, explain_items


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'xaicli.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"xaicli.engine.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
