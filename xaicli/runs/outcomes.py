"""Per image, what a run concluded - read back from the manifest, so resumed images count like new ones.

:func:`image_outcomes` gives one :class:`ImageOutcome` per image of the run (explained, resumed or
failed): its error, or its top-1 prediction and its label. :class:`Accuracy` is what the summary reports
when labels are known: top-1 accuracy over the labelled images and the confusion pairs (label, predicted,
count) with label != predicted, most frequent first. The CI reports (:mod:`.ci_cases`) make one test case
of each outcome.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xaicli.outputs.manifest import ManifestRow


@dataclass(frozen=True)
class ImageOutcome:
    """One image of a run: ``error`` when it failed, else its top-1 class (``predicted``, None when the
    manifest does not say) and its ``label`` (None when unknown)."""

    image: str
    rel: str
    error: str | None = None
    predicted: str | None = None
    label: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def misclassified(self) -> bool:
        return self.ok and None not in (self.label, self.predicted) and self.label != self.predicted


def image_outcomes(rows: Iterable[ManifestRow], rels: Sequence[str] | None = None) -> list[ImageOutcome]:
    """The outcome of each image in ``rels`` (its ``rel``, in that order; None: every image of ``rows``,
    in first-seen order) from its manifest rows: an image whose last row is an error row failed (with that
    error); the predicted class is the rows' ``predicted`` (or, for rows written before that field
    existed, the target of its ``top1`` row)."""
    ok: dict[str, ManifestRow] = {}
    top1: dict[str, str] = {}
    errors: dict[str, ManifestRow] = {}
    order: dict[str, None] = {}
    for row in rows:
        rel = row.key[0]
        order.setdefault(rel)
        if not row.ok:
            errors[rel] = row
            continue
        errors.pop(rel, None)
        if row.predicted is not None or rel not in ok:
            ok[rel] = row
        if row.slot == "top1" and row.target_name is not None:
            top1[rel] = row.target_name
    out = []
    for rel in rels if rels is not None else list(order):
        if rel in errors:
            out.append(ImageOutcome(errors[rel].image, rel, errors[rel].error or "failed"))
        elif rel in ok:
            row = ok[rel]
            out.append(ImageOutcome(row.image, rel, None, row.predicted or top1.get(rel), row.label))
    return out


@dataclass
class Accuracy:
    """Top-1 accuracy over the labelled images and the confusion pairs (see the module docstring)."""

    labelled: int = 0
    correct: int = 0
    confusion: list[tuple[str, str, int]] = field(default_factory=list)

    @classmethod
    def of(cls, outcomes: Iterable[ImageOutcome]) -> Accuracy:
        pairs: Counter[tuple[str, str]] = Counter()
        labelled = correct = 0
        for o in outcomes:
            if not o.ok or o.label is None or o.predicted is None:
                continue
            labelled += 1
            if o.label == o.predicted:
                correct += 1
            else:
                pairs[(o.label, o.predicted)] += 1
        confusion = sorted(((a, b, n) for (a, b), n in pairs.items()), key=lambda t: (-t[2], t[0], t[1]))
        return cls(labelled, correct, confusion)

    @property
    def value(self) -> float | None:
        """correct / labelled; None when no image is labelled."""
        return self.correct / self.labelled if self.labelled else None

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": None if self.value is None else round(self.value, 6), "labelled": self.labelled,
                "confusion": [{"label": a, "predicted": b, "count": n} for a, b, n in self.confusion]}

    def line(self, pairs: int = 3) -> str | None:
        """``accuracy 0.92 (46 of 50 labelled images); confused: Shirt -> T-shirt/top 3, ...``; None
        without labels."""
        if self.value is None:
            return None
        text = f"accuracy {self.value:.4f} ({self.correct} of {self.labelled} labelled image(s))"
        if self.confusion:
            shown = ", ".join(f"{a} -> {b} {n}" for a, b, n in self.confusion[:pairs])
            more = f", {len(self.confusion) - pairs} more pair(s)" if len(self.confusion) > pairs else ""
            text += f"; confused (label -> predicted): {shown}{more}"
        return text
