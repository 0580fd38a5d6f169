"""``xaicli sweep``: explain the same images at many layers, to choose the layer (seed 000's first figure).

For each class, the first ``images_per_class`` images (discovery order) are explained with one CAM
method at every layer of the sweep, for their top-1 predicted class (or the first of
``targets.classes`` when the config names classes). Outputs (relative to OUTDIR):

* ``sweep/<class>.png``: rows = layers (forward order), columns = images, under a row of originals;
* ``sweep/summary.png``: the same with one image per class (columns = classes);
* ``sweep/sweep.json``: the layers (name, role, block, shape) and a record per figure;
* ``index.html`` (``figures.html``): the report, which lists these figures with any explain outputs.

The class of an image is its folder's class name when there is one, else its predicted class; to
find the latter without explaining everything, images without a folder label first go through one
plain forward pass. No per-image overlays or manifest rows are written: the sweep is for figures.

The method's maps are requested raw (its ``normalise`` option off, unless the config sets it), and
the figures normalise them as ``figures.normalise`` says, so ``normalise: row`` compares magnitudes
across the images of one layer.

``metric`` (``xaicli sweep --metric insertion``, any faithfulness metric of :mod:`xaicli.metrics`):
every candidate layer's maps are also scored, as the streaming batches pass (each map normalised as
``explain`` writes it), with the metric's options from ``evaluate.options``; the means per layer go to
the summary (a table on the terminal), into ``sweep.json``, and onto the figures (under each row label,
per class in the class figures), and the best layer is named - the choice seed 000 made by eye,
made by measurement.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xaicli.config import Config, MethodConfig, TargetsConfig
from xaicli.engine import ExplainedBatch, Explainer, explain_items
from xaicli.engine.discover import InputImage
from xaicli.errors import ExitCode, UsageError
from xaicli.methods import get_method, methods_where
from xaicli.methods.postprocess import normalise_map
from xaicli.metrics import MetricInput, create_metric, get_metric, metrics_where
from xaicli.metrics.api import metric_chunk
from xaicli.models.candidates import Candidate, resolve_layers
from xaicli.models.loader import load_model
from xaicli.outputs import atomic
from xaicli.outputs.layout import SWEEP_DIR, output_path, safe_name
from xaicli.outputs.lock import OutdirLock
from xaicli.render.figures import FigureStyle, RenderedFigure, sweep_grid
from xaicli.runs.figures import FigureCollector, Sample, figure_record, save_figure
from xaicli.runs.preflight import prepare_inputs
from xaicli.runs.progress import NullProgress, ProgressSink
from xaicli.runs.report import write_report

SWEEP_JSON = f"{SWEEP_DIR}/sweep.json"


@dataclass
class SweepSummary:
    outdir: Path
    method: str
    layers: list[Candidate]
    figures: list[str] = field(default_factory=list)  # written, relative to outdir
    report: Path | None = None  # index.html, when written
    images: int = 0  # explained
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    scores: LayerScores | None = None  # with a metric

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.INPUTS_UNREADABLE if self.failures else ExitCode.OK

    def to_dict(self) -> dict:
        return {"outdir": str(self.outdir), "method": self.method,
                "layers": [{"name": c.name, "role": c.role, "block": c.stage, "shape": list(c.shape)}
                           for c in self.layers],
                "figures": self.figures, "report": str(self.report) if self.report else None,
                "images_explained": self.images,
                "failures": [{"image": p, "error": e} for p, e in self.failures],
                "metric": self.scores.to_dict() if self.scores else None,
                "seconds": round(self.seconds, 3), "exit_code": int(self.exit_code)}


class LayerScores:
    """A faithfulness metric per candidate layer, accumulated from the sweep's batches (a sink)."""

    def __init__(self, name: str, options: dict, explainer: Explainer, method: str, layers: Sequence[str]):
        self.name, self.explainer, self.method, self.layers = name, explainer, method, list(layers)
        self.metric = create_metric(name, options)
        self.values: dict[str, dict[Path, float]] = {layer: {} for layer in self.layers}

    def __call__(self, batch: ExplainedBatch) -> None:
        if batch.result is None:
            return
        ex = self.explainer
        x = ex.normalise(batch.images)
        for layer in self.layers:
            maps = normalise_map(batch.result.maps[(self.method, layer)], ex.is_signed(self.method))
            result = self.metric(MetricInput(ex.loaded.model, x, maps, batch.result.targets, ex.input_range,
                                             chunk_size=metric_chunk(ex)))
            for item, v in zip(batch.items, result.values[:, 0].tolist(), strict=True):
                self.values[layer][item.path] = v

    def mean(self, layer: str, paths: Sequence[Path] | None = None) -> float | None:
        values = [v for p, v in self.values[layer].items() if (paths is None or p in paths) and v == v]
        return sum(values) / len(values) if values else None

    @property
    def best(self) -> str | None:
        scored = [(m, layer) for layer in self.layers if (m := self.mean(layer)) is not None]
        if not scored:
            return None
        return (max if self.metric.higher_is_better else min)(scored)[1]

    def label(self, layer: str, paths: Sequence[Path] | None = None) -> str:
        """The line under a row label: ``insertion 0.612 (best)``."""
        m = self.mean(layer, paths)
        best = " (best)" if layer == self.best else ""
        return f"{self.name} {m:.3f}{best}" if m is not None else f"{self.name} -"

    def to_dict(self) -> dict:
        import statistics

        rows = []
        for layer in self.layers:
            vals = [v for v in self.values[layer].values() if v == v]
            rows.append({"layer": layer, "mean": round(statistics.fmean(vals), 6) if vals else None,
                         "std": round(statistics.pstdev(vals), 6) if vals else None, "n": len(vals)})
        return {"name": self.name, "higher_is_better": self.metric.higher_is_better,
                "options": self.metric.opts, "layers": rows, "best": self.best}


def sweep_config(cfg: Config, method: str, layers: Sequence[str]) -> Config:
    """A copy of ``cfg`` that runs ``method`` at ``layers`` for one target (top-1 or the first class)."""
    cls = get_method(method, key="--method")
    if not cls.needs_layer:
        raise UsageError(f"sweep needs a method that explains a chosen layer (a CAM method); {method!r} "
                         f"takes no layers. Choose one of: {', '.join(methods_where(needs_layer=True))}")
    out = copy.deepcopy(cfg)
    given = next((dict(m.options) for m in cfg.methods if m.name == method), {})
    if "normalise" in cls.options:
        given.setdefault("normalise", False)  # raw maps; the figures normalise them
    out.methods = [MethodConfig(name=method, layers=list(layers), options=given)]
    t = cfg.targets
    out.targets = TargetsConfig(topk=1) if t.classes is None else TargetsConfig(classes=list(t.classes[:1]))
    return out


def run_sweep(cfg: Config, inputs: Sequence[str], outdir: Path, *, layers: str | Sequence[str] = "auto",
              method: str = "gradcam", images_per_class: int | None = None, metric: str | None = None,
              progress: ProgressSink | None = None) -> SweepSummary:
    """Explain up to ``images_per_class`` images per class at every layer; write the sweep figures.

    ``layers``: ``"auto"`` (see :mod:`xaicli.models.candidates`), ``"a,b"`` or a list of names.
    ``metric``: score every layer with this faithfulness metric (see the module docstring).
    Usage errors (unknown layer, method or metric, no images) raise :class:`~xaicli.errors.UsageError`.
    """
    t0 = time.perf_counter()
    progress = progress or NullProgress()
    per_class = images_per_class or cfg.figures.images_per_class
    if per_class < 1:
        raise UsageError("--images-per-class must be >= 1")
    if metric is not None:
        faithful = metrics_where(family="faithfulness")
        if get_metric(metric, key="--metric").family != "faithfulness":
            raise UsageError(f"--metric {metric}: sweep scores layers by faithfulness; valid choices: "
                             + ", ".join(repr(m) for m in faithful))
        create_metric(metric, cfg.evaluate.options.get(metric))  # option errors before the model loads
    items = prepare_inputs(inputs, outdir, progress.note)
    lock = OutdirLock(outdir)
    try:
        if outdir.is_dir():
            lock.acquire()
        summary = _sweep(cfg, items, outdir, layers, method, per_class, metric, progress, lock)
    finally:
        lock.release()
    summary.seconds = time.perf_counter() - t0
    return summary


def _sweep(cfg: Config, items: list[InputImage], outdir: Path, layers: str | Sequence[str], method: str,
           per_class: int, metric: str | None, progress: ProgressSink, lock: OutdirLock) -> SweepSummary:
    """The sweep of :func:`run_sweep` once the inputs, OUTDIR and the metric are checked (``lock`` is
    taken as soon as OUTDIR exists)."""
    loaded = load_model(cfg)  # once: the candidates are found on it, then the explainer prepares it
    cands = resolve_layers(layers, loaded.model, loaded.input_shape)
    explainer = Explainer(sweep_config(cfg, method, [c.name for c in cands]), loaded=loaded,
                          fold_batchnorms=True, functional_relu=True)
    for notice in explainer.notices:
        progress.note(f"notice: {notice}")
    outdir.mkdir(parents=True, exist_ok=True)
    lock.acquire()
    summary = SweepSummary(outdir, method, cands)
    if metric is not None:
        summary.scores = LayerScores(metric, cfg.evaluate.options.get(metric) or {}, explainer, method,
                                     [c.name for c in cands])

    groups = _groups(items, explainer, summary, progress)
    order = {it.path: i for i, it in enumerate(items)}
    collector = FigureCollector.for_explainer(explainer, per_class, order, groups)
    pending = [it for it in items if it.path in groups]  # discovery order
    expected = min(len(pending), per_class * len(set(groups.values())))
    progress.start(expected, f"sweeping {len(cands)} layer(s)")
    try:
        have: dict[str, int] = {}
        while pending:  # normally one round; an unreadable image is replaced by the next of its class
            chosen, pending = _next_round(pending, groups, have, per_class)
            for batch in explain_items(explainer, chosen, progress.note):
                summary.failures += [(str(it.path), msg) for it, msg in batch.failures]
                collector(batch)
                if summary.scores is not None:
                    summary.scores(batch)
                summary.images += len(batch.items)
                for it in batch.items:
                    have[groups[it.path]] = have.get(groups[it.path], 0) + 1
                progress.advance(batch.count)
    finally:
        progress.stop()
    if not collector.groups:
        raise UsageError("no readable images to sweep")

    style = FigureStyle.from_config(cfg)
    records = write_sweep_figures(collector, cands, method, outdir, style, summary.scores)
    summary.figures = [r["path"] for r in records]
    atomic.write_text(output_path(outdir, SWEEP_JSON), json.dumps({
        "method": method, "layers": summary.to_dict()["layers"], "figures": records,
        "metric": summary.scores.to_dict() if summary.scores else None}, indent=1) + "\n")
    if cfg.figures.html:
        summary.report = write_report(outdir)
    return summary


def _next_round(pending: list[InputImage], groups: dict[Path, str], have: dict[str, int], per_class: int
                ) -> tuple[list[InputImage], list[InputImage]]:
    """Split ``pending`` into the images to explain now (filling each class up to ``per_class``) and
    the rest (kept as replacements for images that fail to decode)."""
    chosen, rest, wanted = [], [], dict(have)
    for it in pending:
        group = groups[it.path]
        if wanted.get(group, 0) < per_class:
            wanted[group] = wanted.get(group, 0) + 1
            chosen.append(it)
        elif have.get(group, 0) < per_class:
            rest.append(it)
    return chosen, rest if chosen else []


def _groups(items: list[InputImage], explainer: Explainer, summary: SweepSummary, progress: ProgressSink
            ) -> dict[Path, str]:
    """The class of every image: its label (``targets.labels``, else its folder's class name), else its
    top-1 prediction (one forward pass)."""
    classes = explainer.loaded.classes
    groups: dict[Path, str] = {}
    unlabelled = []
    for it in items:
        label = explainer.labels.name(it)
        if label is None:
            unlabelled.append(it)
        else:
            groups[it.path] = label
    if unlabelled:
        progress.note(f"sweep: predicting the class of {len(unlabelled)} image(s) without a folder label")
        for batch in explain_items(explainer, unlabelled, progress.note, predict_only=True):
            summary.failures += [(str(it.path), msg) for it, msg in batch.failures]
            if batch.result is not None:
                top1 = batch.result.targets[:, 0].tolist()
                groups.update((it.path, classes[t]) for it, t in zip(batch.items, top1, strict=True))
    return groups


def sweep_figure(title: str, samples: list[Sample], cands: list[Candidate], method: str,
                 collector: FigureCollector, style: FigureStyle, names: list[str], subtitle: str,
                 scores: LayerScores | None = None, paths: Sequence[Path] | None = None) -> RenderedFigure:
    """One sweep grid: rows = ``cands`` (the seed-000 layer figure), columns = ``samples``; with
    ``scores``, each row label carries the layer's metric (over ``paths``, default all images)."""
    keys = [(method, c.name) for c in cands]
    labels = [c.label + (f"\n{scores.label(c.name, paths)}" if scores else "") for c in cands]
    return sweep_grid(
        [s.image for s in samples], [[s.maps[k][0] for k in keys] for s in samples], labels,
        title=title, target_names=[s.target_names[0] for s in samples], probs=[s.probs[0] for s in samples],
        names=names, labels=[s.label for s in samples], signed=any(collector.signed(k) for k in keys),
        style=style, subtitle=subtitle)


def write_sweep_figures(collector: FigureCollector, cands: list[Candidate], method: str, outdir: Path,
                        style: FigureStyle, scores: LayerScores | None = None) -> list[dict]:
    """``sweep/<class>.png`` per class and ``sweep/summary.png``; returns their records."""
    records = []
    target = "top-1 predicted class" if collector.slots[0].kind == "top" else "first configured class"
    what = f"{method} for the {target}"
    scored = ""
    if scores is not None:
        better = "higher" if scores.metric.higher_is_better else "lower"
        scored = (f"; under each layer: mean {scores.name} of its maps ({better} is better), most faithful "
                  f"layer: {scores.best}")
    groups = collector.sorted_groups()
    for group, samples in groups:
        paths = [p for p, g in collector.fixed_groups.items() if g == group] or None
        fig = sweep_figure(f"{group} — layer sweep ({method})", samples, cands, method, collector, style,
                           [s.item.rel.stem for s in samples],
                           f"rows: candidate feature maps in forward order; {what} "
                           f"(captioned under the original){scored}{' (this class)' if scores else ''}",
                           scores, paths)
        rel = save_figure(fig, outdir, f"{SWEEP_DIR}/{safe_name(group)}.png")
        records.append(figure_record("sweep", rel, fig, group, [(method, c.name) for c in cands], samples))
    if groups:
        firsts = [samples[0] for _, samples in groups]
        fig = sweep_figure(f"Layer sweep summary ({method})", firsts, cands, method, collector, style,
                           [g for g, _ in groups],
                           f"one image per class; rows: candidate feature maps; {what}{scored} (all images)",
                           scores)
        rel = save_figure(fig, outdir, f"{SWEEP_DIR}/summary.png")
        records.append(figure_record("sweep-summary", rel, fig, None,
                                     [(method, c.name) for c in cands], firsts))
    return records

