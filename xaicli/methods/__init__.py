"""Attribution methods behind one registry.

Library use, on tensors::

    from xaicli.methods import create_method, TopK
    cam = create_method("gradcam", model, ["layer4"])
    out = cam.explain(x, TopK(3))        # out.maps["layer4"]: (B, 3, H, W) in [0, 1]

    ig = create_method("integrated_gradients", model, input_range=input_range_of(mean, std))
    out = ig.explain(x, TopK(1), chunk_size=32)   # black baseline = raw 0 per channel

    ig = create_method("integrated_gradients", load_model(cfg))   # a LoadedModel: its preprocessing

:class:`xaicli.engine.Explainer` does this for a whole config and passes ``input_range`` from the
model's preprocessing.
"""

from xaicli.methods.base import (
    Call,
    Explanation,
    InputRange,
    Method,
    Option,
    TopK,
    WithClasses,
    input_range_of,
    resolve_targets,
)
from xaicli.methods.registry import available_methods, create_method, get_method, methods_where, register

__all__ = [
    "Call", "Explanation", "InputRange", "Method", "Option", "TopK", "WithClasses", "input_range_of",
    "resolve_targets",
    "available_methods", "create_method", "get_method", "methods_where", "register",
]
