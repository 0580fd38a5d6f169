"""Attribution methods behind one registry.

Library use, on tensors::

    from xaicli.methods import create_method, TopK
    cam = create_method("gradcam", model, ["layer4"])
    out = cam.explain(x, TopK(3))        # out.maps["layer4"]: (B, 3, H, W) in [0, 1]
"""

from xaicli.methods.base import Explanation, Method, Option, TopK, resolve_targets
from xaicli.methods.registry import available_methods, create_method, get_method, register

__all__ = [
    "Explanation", "Method", "Option", "TopK", "resolve_targets",
    "available_methods", "create_method", "get_method", "register",
]
