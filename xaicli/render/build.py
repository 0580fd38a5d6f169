"""``xaicli explain`` with figures: run the explanations, collect what figures need, write them.

Outputs (relative to OUTDIR):

* ``figures/topk/<class>.png`` (``figures.topk``): columns = the first ``figures.images_per_class``
  images of the class in discovery order; rows = the originals, then one overlay row per target rank
  (top-1 ... top-k), for each configured (method, layer). The class is the true label (the folder
  name) or, without one, the top-1 predicted class.
* ``compare/<image path without suffix>.png`` (``figures.compare``): for each image kept for the
  figures, one row: the original, then each (method, layer) for its first target.
* ``figures/figures.json``: what each figure shows (class, methods, layers, images, captions), read
  by the HTML report and by tests.
* ``index.html`` (``figures.html``, on by default): see :mod:`xaicli.render.report`.

Resume: images skipped because the manifest already holds them are not explained again by the run,
so their figure data is *recomputed*: after the run, the skipped images that belong in a figure (at
most ``images_per_class`` per class, chosen with the manifest's label / top-1 class) are explained
once more in memory. Figures after a resume are therefore the same as after a fresh run, whether or
not ``output.maps`` saved the raw maps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from xaicli.config import Config
from xaicli.engine.discover import InputImage, discover_images
from xaicli.engine.run import BatchResult, ProgressSink, RunSummary, run_explain
from xaicli.outputs import atomic
from xaicli.outputs.layout import MANIFEST, safe_name
from xaicli.outputs.manifest import read_manifest
from xaicli.render.collect import UNLABELLED, FigureCollector, Sample
from xaicli.render.figures import FigureStyle, RenderedFigure, compare_grid, topk_grid

FIGURES_JSON = "figures/figures.json"


def slot_label(slot: str, classes: Sequence[str]) -> str:
    """'top2' -> 'top-2'; 'class7' -> 'class Sneaker'."""
    if slot.startswith("top"):
        return f"top-{slot[3:]}"
    if slot.startswith("class") and slot[5:].isdigit() and int(slot[5:]) < len(classes):
        return f"class {classes[int(slot[5:])]}"
    return slot


def key_label(method: str, layer: str | None) -> str:
    return f"{method} @ {layer}" if layer else method


def explain_with_figures(cfg: Config, inputs: Sequence[str], outdir: Path, *, overwrite: bool = False,
                         progress: ProgressSink | None = None) -> RunSummary:
    """``run_explain`` plus the figures and report that ``cfg.figures`` asks for (module docstring)."""
    fig = cfg.figures
    if not (fig.topk or fig.compare):
        summary = run_explain(cfg, inputs, outdir, overwrite=overwrite, progress=progress)
    else:
        items = discover_images(inputs)
        collector = FigureCollector(fig.images_per_class, {it.path: i for i, it in enumerate(items)})
        summary = run_explain(cfg, inputs, outdir, overwrite=overwrite, progress=progress, on_batch=collector,
                              items=items)
        if summary.images_skipped:
            _recompute_skipped(cfg, items, collector, outdir, summary, progress)
        style = FigureStyle.from_config(cfg)
        records = []
        if fig.topk:
            records += write_topk_figures(collector, outdir, style)
        if fig.compare:
            records += write_compare_figures(collector, outdir, style)
        atomic.write_text(outdir / FIGURES_JSON, json.dumps({"figures": records}, indent=1) + "\n")
        if progress is not None:
            kinds = ", ".join(sorted({r["kind"] for r in records}))
            progress.note(f"figures: {len(records)} written ({kinds}) under {outdir}")
    if fig.html:
        from xaicli.render.report import write_report

        path = write_report(outdir)
        if progress is not None:
            progress.note(f"report: {path}")
    return summary


def _recompute_skipped(cfg: Config, items: list[InputImage], collector: FigureCollector, outdir: Path,
                       summary: RunSummary, progress: ProgressSink | None) -> None:
    """Explain again, in memory, the resumed-over images that the figures need (module docstring)."""
    from xaicli.engine.loader import iter_batches
    from xaicli.engine.run import Explainer

    # An image this run explained but did not keep was refused because its class already had enough
    # earlier images; that stays true, so whatever ``wants`` accepts now was skipped (or failed).
    failed = {p for p, _ in summary.failures}
    kept = collector.kept()
    skipped = [it for it in items if it.path not in kept and str(it.path) not in failed]
    group_of: dict[str, str] = {}
    for row in read_manifest(outdir / MANIFEST):
        if row.get("status") != "ok":
            continue
        if row.get("label"):
            group_of[row["image"]] = row["label"]
        elif row.get("slot") == "top1":
            group_of.setdefault(row["image"], row["target_name"])
    wanted: list[InputImage] = []
    counts: dict[str, list[int]] = {}
    for it in skipped:  # discovery order: the first ones of each group win, as in a fresh run
        group = group_of.get(str(it.path), UNLABELLED)
        index = collector.order[it.path]
        taken = counts.setdefault(group, [])
        if len(taken) < collector.per_class and collector.wants(group, index):
            taken.append(index)
            wanted.append(it)
    if not wanted:
        return
    if progress is not None:
        progress.note(f"figures: re-explaining {len(wanted)} resumed image(s) in memory")
    explainer = Explainer(cfg)
    for batch in iter_batches(wanted, explainer.pre, cfg.run.batch_size, cfg.run.workers):
        if batch.images is None:
            continue
        targets, probs, maps, _ = explainer.explain_batch(batch.images)
        collector(BatchResult(batch.items, batch.images, targets.cpu(), probs.cpu(),
                              {k: v.cpu() for k, v in maps.items()}, explainer.slots,
                              explainer.loaded.classes))


# --- figure writers -------------------------------------------------------------------------------------


def _record(kind: str, path: str, fig: RenderedFigure, group: str | None, keys, samples: list[Sample],
            **extra) -> dict:
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
        row_labels = [slot_label(s, classes) for s in slots]
    else:
        row_labels = [f"{key_label(*key)}\n{slot_label(slots[k], classes)}" for key, k in rows]
    labelled = any(s.label for s in samples)
    what = "true class from the folder name" if labelled else (
        "predicted (top-1) class; the folder names no class" if group != UNLABELLED else "no class known")
    ranks = ", ".join(slot_label(s, classes) for s in slots)
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
        rel = f"figures/topk/{safe_name(group)}.png"
        fig.save(outdir / rel)
        records.append(_record("topk", rel, fig, group, collector.keys, samples, slots=collector.slots))
    return records


def compare_figure(sample: Sample, collector: FigureCollector, style: FigureStyle) -> RenderedFigure:
    """One row: the original, then every (method, layer) for the sample's first target."""
    keys = collector.keys
    return compare_grid(
        [sample.image], [[sample.maps[key][0] for key in keys]],
        [f"{m}\n{layer}" if layer else m for m, layer in keys], title=f"{sample.item.rel} — methods compared",
        subtitle=f"target: {slot_label(collector.slots[0], collector.classes)} = {sample.target_names[0]}"
                 + (f"; true class {sample.label}" if sample.label else ""),
        target_names=[sample.target_names[0]], probs=[sample.probs[0]], names=[sample.item.rel.stem],
        signed=[collector.signed(key) for key in keys], style=style)


def compare_path(rel: PurePosixPath) -> str:
    return f"compare/{rel.with_suffix('').as_posix()}.png"


def write_compare_figures(collector: FigureCollector, outdir: Path, style: FigureStyle) -> list[dict]:
    """``compare/<image>.png`` for every image kept for figures; returns their records."""
    records = []
    for group, samples in collector.sorted_groups():
        for s in samples:
            fig = compare_figure(s, collector, style)
            rel = compare_path(s.item.rel)
            fig.save(outdir / rel)
            records.append(_record("compare", rel, fig, group, collector.keys, [s]))
    return records
