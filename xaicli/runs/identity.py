"""The identity of one explain run (:class:`~xaicli.outputs.fingerprint.RunIdentity`), from the prepared
explainer (which took the digest of its model as it was loaded, before preparing it)."""

from __future__ import annotations

from xaicli.engine import Explainer
from xaicli.methods.base import MAP_DEFINITION_VERSION
from xaicli.outputs.fingerprint import RunIdentity, map_key


def run_identity(explainer: Explainer) -> RunIdentity:
    """Model, classes, resolved preprocessing, targets (kind, true class, labels), output naming, map
    definition version and every planned (method, layer) with the options that decide its maps."""
    pre = explainer.pre
    preprocess = {"size": list(pre.size), "mode": pre.mode, "mean": list(pre.mean), "std": list(pre.std),
                  "resize": pre.resize, "alpha_background": pre.alpha_background}
    targets = target_identity(explainer)
    methods = {map_key(pm.name, layer): {"method": pm.name, "layer": layer,
                                         "options": pm.method.map_options()}
               for pm in explainer.methods for layer in pm.layers}
    digest = explainer.digest
    return RunIdentity(model=digest.identity(), classes=list(explainer.classes), preprocess=preprocess,
                       targets=targets, version=MAP_DEFINITION_VERSION, methods=methods,
                       model_description=digest.description, names=explainer.cfg.output.names)


def target_identity(explainer: Explainer) -> str:
    """The targets as the run's fingerprint sees them: the kind of the slots that are not the true class
    ("top-k predicted classes", "fixed classes"), whether the true class is explained, and where labels
    come from when a labels file is given (its digest; the manifest's ``label`` depends on it too). A
    config without ``true_class`` and ``labels`` gives the same text as before they existed."""
    kinds = {s.kind for s in explainer.slots}
    parts = []
    if "top" in kinds:
        parts.append("top-k predicted classes")
    if "class" in kinds:
        parts.append("fixed classes")
    if "true" in kinds:
        parts.append("the true class")
    text = " and ".join(parts)
    labels = explainer.labels
    if "true" in kinds or labels.digest:
        text += f" ({labels.identity})"
    return text
