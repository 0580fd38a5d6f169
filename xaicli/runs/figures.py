"""The figures of ``explain``: keep what figures need while batches stream past, then write them.

Outputs (relative to OUTDIR):

* ``figures/topk/<class>.png`` (``figures.topk``): columns = the first ``figures.images_per_class``
  images of the class in discovery order; rows = the originals, then one overlay row per target rank
  (top-1 ... top-k), for each configured (method, layer). The class is the true label (the folder
  name) or, without one, the top-1 predicted class.
* ``compare/<image path>.png`` (``figures.compare``, e.g. ``compare/cat/a.jpg.png``): for each image kept
  for the figures, one row: the original, then each (method, layer) for its first target.
* ``figures/figures.json``: what each figure shows (class, methods, layers, images, captions), read
  by the HTML report and by tests.

Memory: per class only the first ``per_class`` images in discovery order are kept, with their display
image (uint8) and maps, so memory is bounded by classes x ``per_class`` whatever the folder size. The
class of an image is its true label (the folder name, when it names a class, as the manifest's
``label``), else its top-1 predicted class, else ``"unlabelled"`` (explicit class targets, no label).

Resume: images skipped because the manifest already holds them are not explained again by the run, so
their figure data is *recomputed*: after the run, the skipped images that belong in a figure (at most
``images_per_class`` per class, chosen with the manifest's label / top-1 class) go once more through
the same explainer, in memory. Figures after a resume are therefore the same as after a fresh run,
whether or not ``output.maps`` saved the raw maps.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from xaicli.config import Config
from xaicli.engine import ExplainedBatch, Explainer, MapKey, Slot, explain_items
from xaicli.engine.discover import InputImage
from xaicli.engine.labels import ImageLabels
from xaicli.outputs import atomic
from xaicli.outputs.layout import COMPARE_DIR, FIGURES_DIR, MANIFEST, output_path, safe_name
from xaicli.outputs.manifest import read_rows
from xaicli.render.figures import FigureStyle, RenderedFigure, compare_grid, topk_grid
from xaicli.runs.progress import ProgressSink
from xaicli.runs.summary import RunSummary

FIGURES_JSON = f"{FIGURES_DIR}/figures.json"
UNLABELLED = "unlabelled"
NO_LABEL = "no label"


@dataclass
class Sample:
    """One image kept for figures."""

    index: int  # position in discovery order (figures show images in this order)
    item: InputImage
    group: str  # the class it is shown under
    label: str | None  # true class, if known
    image: np.ndarray  # (C, H, W) uint8
    targets: list[int]  # (K,) explained classes
    target_names: list[str]
    probs: list[float]  # (K,)
    maps: dict[MapKey, np.ndarray] = field(default_factory=dict)  # (K, H, W) float32


class FigureCollector:
    """Called with each :class:`~xaicli.engine.ExplainedBatch`; see the module docstring.

    ``order`` maps each image path to its discovery index, so that a resumed run (which sees the
    remaining images first and re-explains skipped ones later) keeps the same images as a fresh run.
    ``groups`` optionally fixes the class of given paths (a caller that already grouped the images).
    """

    def __init__(self, per_class: int, slots: Sequence[Slot], classes: Sequence[str],
                 signed: Mapping[str, bool] | None = None, order: Mapping[Path, int] | None = None,
                 groups: Mapping[Path, str] | None = None, labels: ImageLabels | None = None):
        self.per_class = per_class
        self.labels = labels or ImageLabels(classes)
        self.slots = list(slots)
        self.classes = list(classes)
        self.method_signed = dict(signed or {})  # method -> its maps are signed (diverging colours)
        self.order = dict(order or {})
        self.fixed_groups = dict(groups or {})
        self.groups: dict[str, list[Sample]] = {}
        self.keys: list[MapKey] = []  # (method, layer) in the run's order

    @classmethod
    def for_explainer(cls, explainer: Explainer, per_class: int, order: Mapping[Path, int] | None = None,
                      groups: Mapping[Path, str] | None = None) -> FigureCollector:
        return cls(per_class, explainer.slots, explainer.classes,
                   {pm.name: pm.method.is_signed() for pm in explainer.methods}, order, groups,
                   explainer.labels)

    def wants(self, group: str, index: int) -> bool:
        kept = self.groups.get(group, [])
        return len(kept) < self.per_class or index < kept[-1].index

    def group_of(self, item: InputImage, targets: list[int]) -> tuple[str, str | None]:
        label = self.labels.name(item)
        if item.path in self.fixed_groups:
            return self.fixed_groups[item.path], label
        if label is not None:
            return label, label
        if self.slots and self.slots[0] == Slot("top", 1):
            return self.classes[targets[0]], None
        return UNLABELLED, None

    def __call__(self, batch: ExplainedBatch) -> None:
        if batch.result is None:
            return
        result = batch.result.cpu()
        for key in result.maps:
            if key not in self.keys:
                self.keys.append(key)
        targets = result.targets.tolist()
        probs = result.probs.tolist()
        for b, item in enumerate(batch.items):
            index = self.order.setdefault(item.path, len(self.order))
            group, label = self.group_of(item, targets[b])
            if not self.wants(group, index):
                continue
            image = (batch.images[b].float().clamp(0, 1) * 255).round().to(torch.uint8)
            sample = Sample(index, item, group, label, image.numpy(), targets[b],
                            [self.classes[t] for t in targets[b]], probs[b],
                            {k: m[b].float().numpy() for k, m in result.maps.items()})
            if label is None:
                self._blank_true_slot(sample)
            kept = self.groups.setdefault(group, [])
            bisect.insort(kept, sample, key=lambda s: s.index)
            del kept[self.per_class:]

    def _blank_true_slot(self, sample: Sample) -> None:
        """An image without a label has no true-class map (the engine's stand-in is the top-1 class):
        its cell is drawn empty (flat) and captioned 'no label'."""
        for k, slot in enumerate(self.slots):
            if slot.kind == "true":
                sample.target_names[k], sample.probs[k] = NO_LABEL, 0.0
                for m in sample.maps.values():
                    m[k] = 0.0

    def kept(self) -> set[Path]:
        return {s.item.path for samples in self.groups.values() for s in samples}

    def signed(self, key: MapKey) -> bool:
        """Whether a (method, layer)'s maps are signed (diverging colours)."""
        return self.method_signed.get(key[0], False)

    def sorted_groups(self) -> list[tuple[str, list[Sample]]]:
        """Groups in class order (then any others alphabetically)."""
        rank = {c: i for i, c in enumerate(self.classes)}
        return sorted(self.groups.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


# --- the figures of ``explain`` ----------------------------------------------------------------------------


def recompute_skipped(explainer: Explainer, items: list[InputImage], collector: FigureCollector,
                      outdir: Path, summary: RunSummary, progress: ProgressSink) -> None:
    """Explain again, in memory, the resumed-over images that the figures need (module docstring)."""
    # An image this run explained but did not keep was refused because its class already had enough
    # earlier images; that stays true, so whatever ``wants`` accepts now was skipped (or failed).
    failed = {p for p, _ in summary.failures}
    kept = collector.kept()
    skipped = [it for it in items if it.path not in kept and str(it.path) not in failed]
    group_of: dict[str, str] = {}
    for row in read_rows(outdir / MANIFEST):
        if not row.ok:
            continue
        if row.label:
            group_of[row.key[0]] = row.label
        elif row.slot == "top1":
            group_of.setdefault(row.key[0], row.target_name)
    wanted: list[InputImage] = []
    counts: dict[str, list[int]] = {}
    for it in skipped:  # discovery order: the first ones of each group win, as in a fresh run
        group = group_of.get(str(it.rel), UNLABELLED)
        index = collector.order[it.path]
        taken = counts.setdefault(group, [])
        if len(taken) < collector.per_class and collector.wants(group, index):
            taken.append(index)
            wanted.append(it)
    if not wanted:
        return
    progress.note(f"figures: re-explaining {len(wanted)} resumed image(s) in memory")
    for batch in explain_items(explainer, wanted, progress.note):
        collector(batch)


def write_figures(cfg: Config, collector: FigureCollector, outdir: Path, progress: ProgressSink) -> None:
    """The figures ``cfg.figures`` asks for, and ``figures/figures.json`` listing them."""
    style = FigureStyle.from_config(cfg)
    records = []
    if cfg.figures.topk:
        records += write_topk_figures(collector, outdir, style)
    if cfg.figures.compare:
        records += write_compare_figures(collector, outdir, style)
    atomic.write_text(output_path(outdir, FIGURES_JSON), json.dumps({"figures": records}, indent=1) + "\n")
    kinds = ", ".join(sorted({r["kind"] for r in records}))
    progress.note(f"figures: {len(records)} written ({kinds}) under {outdir}")


def key_label(method: str, layer: str | None) -> str:
    return f"{method} @ {layer}" if layer else method


def save_figure(fig: RenderedFigure, outdir: Path, rel: str, *, image_outputs: bool = False) -> str:
    """Store ``fig`` at ``rel`` inside OUTDIR (escaped, checked); returns the path written, relative to
    OUTDIR (what the figure indexes record)."""
    path = output_path(outdir, rel, image_outputs=image_outputs)
    atomic.write_bytes(path, fig.png_bytes())
    return path.relative_to(outdir).as_posix()


def figure_record(kind: str, path: str, fig: RenderedFigure, group: str | None, keys: Sequence[MapKey],
                  samples: list[Sample], **extra) -> dict:
    """The entry of one figure in ``figures.json`` / ``sweep.json``."""
    return {"kind": kind, "path": path, "title": fig.title, "class": group,
            "methods": list(dict.fromkeys(m for m, _ in keys)),
            "layers": list(dict.fromkeys(layer or "input" for _, layer in keys)),
            "images": [str(s.item.path) for s in samples], "row_labels": fig.row_labels,
            "captions": fig.captions, "size": list(fig.image.size), **extra}


def topk_figure(group: str, samples: list[Sample], collector: FigureCollector, style: FigureStyle
                ) -> RenderedFigure:
    """The top-k grid of one class from collected samples (rows: each (method, layer) x each target)."""
    keys, slots, classes = collector.keys, collector.slots, collector.classes
    rows = [(key, k) for key in keys for k in range(len(slots))]
    if len(keys) == 1:
        row_labels = [s.label(classes) for s in slots]
    else:
        row_labels = [f"{key_label(*key)}\n{slots[k].label(classes)}" for key, k in rows]
    labelled = any(s.label for s in samples)
    what = "true class" if labelled else (
        "predicted (top-1) class; the folder names no class" if group != UNLABELLED else "no class known")
    ranks = ", ".join(s.label(classes) for s in slots)
    what_ran = key_label(*keys[0]) if len(keys) == 1 else f"{len(keys)} methods/layers"
    return topk_grid(
        [s.image for s in samples], [[s.maps[key][k] for key, k in rows] for s in samples],
        [[s.target_names[k] for _, k in rows] for s in samples],
        [[s.probs[k] for _, k in rows] for s in samples],
        row_labels=row_labels, title=f"{group} — {what_ran}",
        subtitle=f"{len(samples)} image(s), grouped by {what}; rows: {ranks}; captions: explained class "
                 "and its probability (red: top-1 differs from the true class)",
        names=[s.item.rel.stem for s in samples], labels=[s.label for s in samples],
        signed=[collector.signed(key) for key, _ in rows], style=style)


def write_topk_figures(collector: FigureCollector, outdir: Path, style: FigureStyle) -> list[dict]:
    """``figures/topk/<class>.png`` for every class seen; returns their records."""
    records = []
    for group, samples in collector.sorted_groups():
        fig = topk_figure(group, samples, collector, style)
        rel = save_figure(fig, outdir, f"{FIGURES_DIR}/topk/{safe_name(group)}.png")
        records.append(figure_record("topk", rel, fig, group, collector.keys, samples,
                                     slots=[s.name for s in collector.slots]))
    return records


def compare_figure(sample: Sample, collector: FigureCollector, style: FigureStyle) -> RenderedFigure:
    """One row: the original, then every (method, layer) for the sample's first target."""
    keys = collector.keys
    return compare_grid(
        [sample.image], [[sample.maps[key][0] for key in keys]],
        [f"{m}\n{layer}" if layer else m for m, layer in keys], title=f"{sample.item.rel} — methods compared",
        subtitle=f"target: {collector.slots[0].label(collector.classes)} = {sample.target_names[0]}"
                 + (f"; true class {sample.label}" if sample.label else ""),
        target_names=[sample.target_names[0]], probs=[sample.probs[0]], names=[sample.item.rel.stem],
        signed=[collector.signed(key) for key in keys], style=style)


def compare_path(rel: PurePosixPath) -> str:
    """``compare/<image path>.png``: the image's path below its input root, extension kept (``a.png`` and
    ``a.jpg`` get a figure each)."""
    return f"{COMPARE_DIR}/{rel.as_posix()}.png"


def write_compare_figures(collector: FigureCollector, outdir: Path, style: FigureStyle) -> list[dict]:
    """``compare/<image>.png`` for every image kept for figures; returns their records."""
    records = []
    for group, samples in collector.sorted_groups():
        for s in samples:
            fig = compare_figure(s, collector, style)
            rel = save_figure(fig, outdir, compare_path(s.item.rel))
            records.append(figure_record("compare", rel, fig, group, collector.keys, [s]))
    return records
