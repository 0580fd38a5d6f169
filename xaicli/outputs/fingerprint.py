"""Fingerprints: what produced a map, on every manifest row, so that a resume only keeps results of the same
configuration.

A fingerprint has two parts, ``<run>-<map>`` (12 and 8 hex digits of SHA-256):

* **run**: what every map of a run depends on - the model (source, architecture, a digest of its code
  and of its weights: :mod:`xaicli.models.digest`), its class names, the preprocessing as resolved
  (size, mode, mean, std, resize, alpha background), the kind of targets (top-k predicted classes or
  fixed classes, and whether the true class is explained, with what the labels are: a labels file's
  digest or folder names), how output files are named (``output.names``: a resume must not mix
  ``top1_Bag.png`` and ``top1.png``) and :data:`~xaicli.methods.base.MAP_DEFINITION_VERSION`;
* **map**: the method, its layer and its resolved options (defaults filled in; options that do not
  change the map, such as ``chunk_size``, left out).

The target *slot* (top-2, class 7) is part of the row's key, not of its fingerprint: top-2 is the second
most likely class whatever ``topk`` is, so asking for more slots only adds rows.

A rerun into an OUTDIR that holds rows (:func:`check_resume`) resumes when every row's run part is this
run's and every row of a (method, layer) this run computes has this run's map part; it *extends* the
run when it only adds methods, layers or top-k slots; anything else is refused with one line naming what
differs (exit 2) - ``--overwrite`` or another ``-o`` are the ways on. ``run.json`` keeps the identity of
every run that wrote the folder (``history``), which is what lets the refusal say what changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xaicli.errors import UsageError
from xaicli.outputs.manifest import ManifestRow


class IdentityMismatch(UsageError):
    """OUTDIR holds results of another configuration; the message says what differs and how to go on."""


def map_key(method: str, layer: str | None) -> str:
    """``gradcam@features.1.bn``; ``saliency@input`` for methods that explain the input."""
    return f"{method}@{layer or 'input'}"


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RunIdentity:
    """What determines the maps of one run (see the module docstring). ``model_description`` is for
    people (which file, which factory) and is not hashed: moving a checkpoint keeps its fingerprint."""

    model: dict[str, Any]  # source, architecture, code, weights (ModelDigest.identity())
    classes: list[str]
    preprocess: dict[str, Any]
    targets: str  # "top-k predicted classes" | "fixed classes" [+ true class, labels]
    version: int
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)  # map key -> method, layer, options
    model_description: str = ""
    names: str = "class"  # output.names

    def run_part(self) -> str:
        data = {"model": self.model, "classes": self.classes, "preprocess": self.preprocess,
                "targets": self.targets, "version": self.version}
        if self.names != "class":  # hashed only when not the default: older runs keep their fingerprints
            data["names"] = self.names
        return _digest(data)[:12]

    def map_part(self, key: str) -> str:
        return _digest(self.methods[key])[:8]

    def fingerprint(self, method: str, layer: str | None) -> str:
        return f"{self.run_part()}-{self.map_part(map_key(method, layer))}"

    def fingerprints(self) -> dict[str, str]:
        """Map key -> fingerprint of every map this run computes."""
        run = self.run_part()
        return {key: f"{run}-{self.map_part(key)}" for key in self.methods}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunIdentity:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def check_resume(ours: RunIdentity, rows: Iterable[ManifestRow], history: list[dict[str, Any]],
                 outdir: Path) -> None:
    """Raise :class:`IdentityMismatch` unless every ok row in ``rows`` may stay next to this run's results
    (same run part; same map part where this run computes the same method at the same layer)."""
    wanted = ours.fingerprints()
    run = ours.run_part()
    previous = _known_identities(history)
    for row in rows:
        if not row.ok:
            continue
        if not row.fingerprint:
            raise IdentityMismatch(f"OUTDIR {outdir} holds results without a fingerprint (written by an "
                                   "older xaicli), which a resume cannot vouch for: " + _WAYS_ON)
        row_run, _, _ = row.fingerprint.partition("-")
        if row_run != run:
            raise IdentityMismatch(_what_differs(outdir, previous.get(row_run), ours, row.fingerprint))
        key = map_key(row.method or "", row.layer)
        if key in wanted and row.fingerprint != wanted[key]:
            before = previous.get(row_run)
            old = before.methods.get(key) if before else None
            raise IdentityMismatch(_options_differ(outdir, key, old, ours.methods[key], row.fingerprint))


_WAYS_ON = "use --overwrite to replace its results, or another -o"


def _known_identities(history: list[dict[str, Any]]) -> dict[str, RunIdentity]:
    """Run part -> identity, for every run recorded in run.json's history (the latest wins)."""
    known = {}
    for entry in history:
        try:
            identity = RunIdentity.from_dict(entry["identity"])
            known[identity.run_part()] = identity
        except (KeyError, TypeError):
            continue  # an entry from another version, or edited by hand: it cannot explain anything
    return known


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if isinstance(value, str) and value.startswith("sha256:"):
        return value[:19]  # sha256: + 12 hex digits
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _what_differs(outdir: Path, before: RunIdentity | None, ours: RunIdentity, fingerprint: str) -> str:
    """``OUTDIR out was written with <what> <old>, this run has <new>: <ways on>``."""
    if before is None:
        return (f"OUTDIR {outdir} holds results of another configuration (fingerprint {fingerprint}, this "
                f"run {ours.run_part()}; its run.json does not say what it was): " + _WAYS_ON)
    old, new = before.model, ours.model
    if (old.get("source"), old.get("architecture")) != (new.get("source"), new.get("architecture")):
        what, a, b = "model", before.model_description, ours.model_description
    elif old.get("code") != new.get("code"):
        what, a, b = "model code", old.get("code"), new.get("code")
    elif old.get("weights") != new.get("weights"):
        what, a, b = "model weights", old.get("weights"), new.get("weights")
    elif before.classes != ours.classes:
        what, a, b = "model.classes", before.classes, ours.classes
    elif before.preprocess != ours.preprocess:
        name = next(k for k in sorted({*before.preprocess, *ours.preprocess})
                    if before.preprocess.get(k) != ours.preprocess.get(k))
        what, a, b = f"preprocess.{name}", before.preprocess.get(name), ours.preprocess.get(name)
    elif before.targets != ours.targets:
        what, a, b = "targets", before.targets, ours.targets
    elif before.names != ours.names:
        what, a, b = "output.names", before.names, ours.names
    else:
        what, a, b = "map definition version", before.version, ours.version
    return f"OUTDIR {outdir} was written with {what} {_short(a)}, this run has {_short(b)}: " + _WAYS_ON


def _options_differ(outdir: Path, key: str, before: dict[str, Any] | None, ours: dict[str, Any],
                    fingerprint: str) -> str:
    method, _, layer = key.partition("@")
    where = f"{method} at {layer}" if layer != "input" else method
    if before is None:
        return (f"OUTDIR {outdir} holds {where} results of other options (fingerprint {fingerprint}): "
                + _WAYS_ON)
    old, new = before.get("options", {}), ours.get("options", {})
    names = [k for k in sorted({*old, *new}) if old.get(k) != new.get(k)]
    a = ", ".join(f"{k}={_short(old.get(k))}" for k in names)
    b = ", ".join(f"{k}={_short(new.get(k))}" for k in names)
    return f"OUTDIR {outdir} was written with {where} options {a}, this run has {b}: " + _WAYS_ON
