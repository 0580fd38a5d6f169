"""The identity of one explain run (:class:`~xaicli.outputs.fingerprint.RunIdentity`), from the prepared
explainer (which took the digest of its model as it was loaded, before preparing it)."""

from __future__ import annotations

from xaicli.engine import Explainer
from xaicli.methods.base import MAP_DEFINITION_VERSION
from xaicli.outputs.fingerprint import RunIdentity, map_key


def run_identity(explainer: Explainer) -> RunIdentity:
    """Model, classes, resolved preprocessing, target kind, map definition version and every planned
    (method, layer) with the options that decide its maps."""
    pre = explainer.pre
    preprocess = {"size": list(pre.size), "mode": pre.mode, "mean": list(pre.mean), "std": list(pre.std),
                  "resize": pre.resize, "alpha_background": pre.alpha_background}
    targets = ("top-k predicted classes" if all(s.kind == "top" for s in explainer.slots)
               else "fixed classes")
    methods = {map_key(pm.name, layer): {"method": pm.name, "layer": layer,
                                         "options": pm.method.map_options()}
               for pm in explainer.methods for layer in pm.layers}
    digest = explainer.digest
    return RunIdentity(model=digest.identity(), classes=list(explainer.classes), preprocess=preprocess,
                       targets=targets, version=MAP_DEFINITION_VERSION, methods=methods,
                       model_description=digest.description)
