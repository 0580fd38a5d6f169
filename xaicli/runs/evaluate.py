"""``xaicli evaluate``: explain exactly as ``explain``, then score every explanation of this run's config.

1. Plan: the metrics (``--metrics`` or ``evaluate.metrics``) and their options are checked against the
   metric registry, masks are required for the localisation metrics, gates must name evaluated metrics -
   all before the model is loaded, so mistakes exit 2 with nothing run.
2. Explain: :func:`xaicli.runs.explain.explain` with the same config and one shared explainer (one model
   load per command): same manifest, maps and overlays; a rerun resumes. Maps are always written,
   since the metrics read them.
3. Evaluate: every ``ok`` manifest row of this run's (method, layer, slot) for the discovered images -
   including rows resumed from an earlier run - with the map read back from its ``.npy`` file, exactly
   as written, in batches of ``run.batch_size`` images (decoded ahead on worker threads); each metric
   runs all targets, steps and stages of a batch through the model in large chunks.
4. Outputs: ``evaluation.jsonl`` (one row per image x method x layer x target x metric [x stage], plus
   error rows for images that could not be evaluated), ``evaluation.json`` (per method x layer x metric:
   mean, std, median, n; the gates), figures under ``figures/evaluate/`` (:mod:`.evaluate_figures`),
   and the report (``index.html``) re-written to link them.
5. Gates: ``--fail-under METRIC=VALUE`` / ``--fail-over METRIC=VALUE`` (and ``evaluate.gates``) compare
   each (method, layer)'s mean with the threshold - for MPRT the mean at the last stage (the fully
   randomised model); any failure makes the exit code 3.

``evaluation.jsonl`` is rewritten by every run (from a temporary file, renamed when complete), so its
rows always belong to the config that wrote them. Undefined values (e.g. an image without a mask) are
``null``, never made-up numbers, and are left out of the means (``n`` counts the defined ones).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xaicli.config import Config
from xaicli.engine import Explainer
from xaicli.engine.discover import InputImage, discover_images
from xaicli.engine.loader import iter_batches
from xaicli.errors import ExitCode, UsageError, format_choices
from xaicli.metrics import Metric, MetricInput, MetricResult, available_metrics, create_metric
from xaicli.metrics.api import map_source, metric_chunk
from xaicli.outputs.layout import MANIFEST
from xaicli.outputs.manifest import ManifestRow, read_rows
from xaicli.runs.evaluate_figures import FigureData, spread, write_evaluation_figures
from xaicli.runs.explain import command_explainer, explain
from xaicli.runs.masks import MaskSource, open_masks
from xaicli.runs.progress import NullProgress, ProgressSink
from xaicli.runs.report import write_report
from xaicli.runs.summary import RunSummary

EVALUATION_JSONL = "evaluation.jsonl"
EVALUATION_JSON = "evaluation.json"
MapKey = tuple[str, str | None]


# --- gates -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """``fail_under``: fail when a mean is below ``threshold``; ``fail_over``: when it is above."""

    metric: str
    kind: str  # "fail_under" | "fail_over"
    threshold: float

    def passes(self, value: float) -> bool:
        return value >= self.threshold if self.kind == "fail_under" else value <= self.threshold

    @property
    def symbol(self) -> str:
        return ">=" if self.kind == "fail_under" else "<="


@dataclass
class GateResult:
    gate: Gate
    method: str
    layer: str | None
    value: float | None  # None: no defined value to compare (fails)
    passed: bool

    def line(self) -> str:
        """The one line a failed gate prints: metric, method, layer, value, threshold."""
        value = "undefined" if self.value is None else f"{self.value:.4g}"
        return (f"gate failed: {self.gate.metric} of {self.method} @ {self.layer or 'input'} = {value}, "
                f"required {self.gate.symbol} {self.gate.threshold:g} (--{self.gate.kind.replace('_', '-')})")

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.gate.metric, "kind": self.gate.kind, "threshold": self.gate.threshold,
                "method": self.method, "layer": self.layer, "value": self.value, "passed": self.passed}


def parse_gates(specs: Sequence[str], kind: str) -> dict[str, float]:
    """``["insertion=0.5", ...]`` from the command line -> ``{"insertion": 0.5}``; bad syntax: UsageError."""
    out = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--{kind.replace('_', '-')} {spec!r}: expected METRIC=VALUE, e.g. insertion=0.5"
                             ) from None
    return out


# --- the plan ----------------------------------------------------------------------------------------------


@dataclass
class EvaluationPlan:
    metrics: dict[str, Metric]
    gates: list[Gate]
    masks: MaskSource | None
    figure_images: int

    @property
    def needs_unfolded_model(self) -> bool:
        """MPRT randomises the model's modules: the explainer keeps its batch norms unfolded, so the
        stages are the model's own modules (folding would hide the batch norms)."""
        return any(m.reexplains for m in self.metrics.values())


def plan_evaluation(cfg: Config, metrics: Sequence[str] | None = None, masks: str | Path | None = None,
                    fail_under: Mapping[str, float] | None = None,
                    fail_over: Mapping[str, float] | None = None) -> EvaluationPlan:
    """Check everything that can be checked without the model (see the module docstring, step 1)."""
    e = cfg.evaluate
    names = list(dict.fromkeys(metrics or e.metrics))
    key = "--metrics" if metrics else "evaluate.metrics"
    known = available_metrics()
    for name in names:
        if name not in known:
            raise UsageError(f"{key}: unknown metric {name!r}; {format_choices(name, known)}")
    for name in e.options:
        if name not in known:
            raise UsageError(f"evaluate.options: unknown metric {name!r}; {format_choices(name, known)}")
    created = {name: create_metric(name, e.options.get(name)) for name in names}
    mask_path = Path(masks) if masks is not None else (cfg.resolve_path(e.masks) if e.masks else None)
    needing = [n for n, m in created.items() if m.needs_masks]
    if needing and mask_path is None:
        raise UsageError(f"{', '.join(needing)} need object masks: pass --masks DIR (a folder of PNG masks "
                         "mirroring the inputs, or a .json / .csv file of boxes) or set evaluate.masks")
    source = open_masks(mask_path) if mask_path is not None and needing else None
    gates = []
    for kind, given, configured in (("fail_under", fail_under, e.gates.fail_under),
                                    ("fail_over", fail_over, e.gates.fail_over)):
        for name, threshold in {**configured, **(given or {})}.items():
            if name not in created:
                raise UsageError(f"gate --{kind.replace('_', '-')} {name}: {name!r} is not evaluated in this "
                                 f"run; {format_choices(name, list(created))}")
            gates.append(Gate(name, kind, float(threshold)))
    return EvaluationPlan(created, gates, source, e.figure_images)


# --- the summary -------------------------------------------------------------------------------------------


@dataclass
class EvaluationSummary:
    """What ``evaluate`` did: the explain run's summary, the metric statistics, the gates."""

    explain: RunSummary
    stats: list[dict[str, Any]] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    rows: int = 0
    images: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # images not evaluated
    figures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    report: Path | None = None

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    @property
    def exit_code(self) -> ExitCode:
        if self.failed_gates:
            return ExitCode.GATE_FAILED
        return ExitCode.INPUTS_UNREADABLE if self.explain.failures or self.failures else ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {"explain": self.explain.to_dict(), "images_evaluated": self.images, "rows": self.rows,
                "failures": [{"image": p, "error": e} for p, e in self.failures],
                "summary": self.stats, "gates": [g.to_dict() for g in self.gates],
                "passed": not self.failed_gates, "figures": self.figures, "seconds": round(self.seconds, 3),
                "exit_code": int(self.exit_code)}


class Statistics:
    """Per (method, layer, metric[, stage]): every defined value seen, for means and medians."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str | None, str, int], list[float]] = {}
        self.undefined: dict[tuple[str, str | None, str, int], int] = {}
        self.stages: dict[tuple[str, str | None, str], list[str]] = {}

    def add(self, method: str, layer: str | None, metric: str, result: MetricResult) -> None:
        values = result.values
        if result.stages is not None:
            self.stages[(method, layer, metric)] = result.stages
        per_stage = values.flatten(0, 1) if values.dim() == 3 else values.reshape(-1, 1)  # (B*K, S)
        for s in range(per_stage.shape[1]):
            col = per_stage[:, s]
            key = (method, layer, metric, s)
            finite = col[torch.isfinite(col)].tolist()
            self.values.setdefault(key, []).extend(finite)
            self.undefined[key] = self.undefined.get(key, 0) + int(col.numel() - len(finite))

    def summary(self, metric_info: Mapping[str, Metric]) -> list[dict[str, Any]]:
        """One record per (method, layer, metric): mean, std, median, n (staged: the last stage, and every
        stage under ``stages``)."""
        out = []
        groups = dict.fromkeys((m, la, me) for m, la, me, _ in self.values)
        for method, layer, metric in groups:
            names = self.stages.get((method, layer, metric))
            n_stages = len(names) if names else 1
            per = [_describe(self.values[key], self.undefined[key])
                   for key in ((method, layer, metric, s) for s in range(n_stages))]
            record = {"method": method, "layer": layer, "metric": metric, **per[-1],
                      "higher_is_better": metric_info[metric].higher_is_better}
            if names:
                record["value_at"] = f"stage {n_stages} ({names[-1]}): the fully randomised model"
                record["stages"] = [{"stage_index": i + 1, "stage": name, **d}
                                    for i, (name, d) in enumerate(zip(names, per, strict=True))]
            out.append(record)
        return out


def _describe(values: list[float], undefined: int) -> dict[str, Any]:
    if not values:
        return {"mean": None, "std": None, "median": None, "n": 0, "undefined": undefined}
    return {"mean": _num(statistics.fmean(values)), "std": _num(statistics.pstdev(values)),
            "median": _num(statistics.median(values)), "n": len(values), "undefined": undefined}


def _num(v: float) -> float | None:
    return round(float(v), 6) if math.isfinite(v) else None


def _jsonable(v: Any) -> Any:
    """Tensor items / lists -> plain JSON values; non-finite floats -> null (strict JSON)."""
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, bool) or isinstance(v, int):
        return v
    if isinstance(v, float):
        return _num(v)
    return v


# --- the run -----------------------------------------------------------------------------------------------


def run_evaluate(cfg: Config, inputs: Sequence[str], outdir: Path, *, metrics: Sequence[str] | None = None,
                 masks: str | Path | None = None, fail_under: Mapping[str, float] | None = None,
                 fail_over: Mapping[str, float] | None = None, overwrite: bool = False,
                 progress: ProgressSink | None = None) -> EvaluationSummary:
    """The whole ``xaicli evaluate`` command (see the module docstring). Usage errors raise
    :class:`~xaicli.errors.UsageError` before anything runs; per-image failures are recorded."""
    t0 = time.perf_counter()
    progress = progress or NullProgress()
    plan = plan_evaluation(cfg, metrics, masks, fail_under, fail_over)
    if not cfg.output.maps:
        progress.note("evaluate reads the maps: output.maps turned on")
        cfg.output.maps = True
    explainer = command_explainer(cfg, fold_batchnorms=not plan.needs_unfolded_model)
    explained = explain(cfg, inputs, outdir, overwrite=overwrite, progress=progress, explainer=explainer)
    summary = EvaluationSummary(explained)
    items = discover_images(inputs)
    evaluator = Evaluator(explainer, plan, outdir, progress)
    evaluator.run(items, summary)
    summary.stats = evaluator.stats.summary(plan.metrics)
    summary.gates = check_gates(plan.gates, summary.stats)
    summary.figures = write_evaluation_figures(cfg, evaluator.figures, summary.stats, summary.gates, outdir)
    write_evaluation_json(outdir, plan, summary, explainer)
    if cfg.figures.html:
        summary.report = write_report(outdir)
    summary.seconds = time.perf_counter() - t0
    return summary


def check_gates(gates: Sequence[Gate], stats: Sequence[dict[str, Any]]) -> list[GateResult]:
    out = []
    for gate in gates:
        for rec in stats:
            if rec["metric"] == gate.metric:
                value = rec["mean"]
                out.append(GateResult(gate, rec["method"], rec["layer"], value,
                                      value is not None and gate.passes(value)))
    return out


def write_evaluation_json(outdir: Path, plan: EvaluationPlan, summary: EvaluationSummary,
                          explainer: Explainer) -> None:
    from xaicli.outputs import atomic

    data = {
        "metrics": {name: {"options": m.opts, "family": m.family, "higher_is_better": m.higher_is_better,
                           "paper": m.paper} for name, m in plan.metrics.items()},
        "methods": [{"name": pm.name, "layers": pm.layers, "options": pm.options}
                    for pm in explainer.methods],
        "slots": [s.name for s in explainer.slots],
        "images_evaluated": summary.images, "rows": summary.rows,
        "failures": [{"image": p, "error": e} for p, e in summary.failures],
        "summary": summary.stats, "gates": [g.to_dict() for g in summary.gates],
        "passed": not summary.failed_gates, "figures": summary.figures,
    }
    atomic.write_text(outdir / EVALUATION_JSON, json.dumps(data, indent=1, allow_nan=False) + "\n")


class Evaluator:
    """Scores the manifest rows of one run (step 3 of the module docstring) and writes the rows."""

    def __init__(self, explainer: Explainer, plan: EvaluationPlan, outdir: Path, progress: ProgressSink):
        self.explainer, self.plan, self.outdir, self.progress = explainer, plan, outdir, progress
        self.stats = Statistics()
        self.figures = FigureData(keys=list(explainer.map_keys), classes=explainer.classes,
                                  signed={pm.name: pm.method.is_signed() for pm in explainer.methods})
        self.chunk = metric_chunk(explainer)

    def rows_by_image(self, items: Sequence[InputImage]) -> dict[str, dict[tuple[MapKey, str], ManifestRow]]:
        """This config's ok rows (the last one per explanation), by image path."""
        keys = set(self.explainer.map_keys)
        slots = {s.name for s in self.explainer.slots}
        wanted = {str(it.path) for it in items}
        out: dict[str, dict[tuple[MapKey, str], ManifestRow]] = {}
        for row in read_rows(self.outdir / MANIFEST):
            if row.ok and row.image in wanted and (row.method, row.layer) in keys and row.slot in slots:
                out.setdefault(row.image, {})[((row.method, row.layer), row.slot)] = row
        return out

    def run(self, items: Sequence[InputImage], summary: EvaluationSummary) -> None:
        ex = self.explainer
        rows = self.rows_by_image(items)
        ready, missing = [], []
        for index, it in enumerate(items):
            got = rows.get(str(it.path), {})
            need = {(key, s.name) for key in ex.map_keys for s in ex.slots_of(it)}
            if not need:
                continue  # the true class alone and no label: nothing explained, nothing to score
            if need <= set(got) and all(got[k].map for k in need):
                ready.append((index, it))
            elif str(it.path) not in {p for p, _ in summary.explain.failures}:
                missing.append((str(it.path), "no complete explanation with maps in the manifest"))
        failed = [(p, f"not explained: {e}") for p, e in summary.explain.failures] + missing
        shown = [ready[j] for j in spread(len(ready), self.plan.figure_images)]  # across the folder
        self.figures.keep_ids = {i for i, _ in shown}
        self.figures.names = {i: (str(it.path), it.rel.with_suffix("").as_posix()) for i, it in shown}
        partial = self.outdir / (EVALUATION_JSONL + ".partial")
        self.progress.start(len(ready), f"evaluating {len(self.plan.metrics)} metric(s)")
        ids_of = {it.path: i for i, it in ready}
        try:
            with partial.open("w", encoding="utf-8") as out:
                for path, error in failed:
                    out.write(json.dumps({"image": path, "status": "error", "error": error}) + "\n")
                summary.failures += missing
                batches = iter_batches([it for _, it in ready], ex.pre, ex.cfg.run.batch_size,
                                       ex.cfg.run.workers)
                for batch in batches:
                    for it, msg in batch.failures:
                        summary.failures.append((str(it.path), msg))
                        out.write(json.dumps({"image": str(it.path), "status": "error", "error": msg}) + "\n")
                    if batch.images is not None:
                        lines = self.evaluate_batch(batch.items, batch.images, rows, ids_of)
                        out.writelines(lines)
                        summary.rows += len(lines)
                        summary.images += len(batch.items)
                    self.progress.advance(len(batch.items) + len(batch.failures))
            os.replace(partial, self.outdir / EVALUATION_JSONL)
        finally:
            self.progress.stop()
            partial.unlink(missing_ok=True)

    def evaluate_batch(self, items: list[InputImage], images: torch.Tensor,
                       rows: Mapping[str, Mapping[tuple[MapKey, str], ManifestRow]],
                       ids_of: Mapping[Path, int]) -> list[str]:
        """The evaluation.jsonl lines of one batch. Images are scored together when they have the same
        slots (all of them do, unless the true class is explained and some have no label)."""
        groups: dict[tuple[str, ...], list[int]] = {}
        for b, it in enumerate(items):
            groups.setdefault(tuple(s.name for s in self.explainer.slots_of(it)), []).append(b)
        lines: list[str] = []
        for slots, picked in groups.items():
            index = torch.tensor(picked)
            part = images if len(picked) == len(items) else images[index]
            lines += self._evaluate_group([items[b] for b in picked], part, slots, rows, ids_of)
        return lines

    def _evaluate_group(self, items: list[InputImage], images: torch.Tensor, slots: tuple[str, ...],
                        rows: Mapping[str, Mapping[tuple[MapKey, str], ManifestRow]],
                        ids_of: Mapping[Path, int]) -> list[str]:
        ex = self.explainer
        x = ex.normalise(images)
        ids = torch.tensor([ids_of[it.path] for it in items])
        masks = self.masks(items)
        lines: list[str] = []
        for key in ex.map_keys:
            per_image = [[rows[str(it.path)][(key, s)] for s in slots] for it in items]
            maps = torch.from_numpy(np.stack([[np.load(self.outdir / r.map) for r in img]
                                              for img in per_image]))  # (B, K, H, W), as written
            targets = torch.tensor([[r.target for r in img] for img in per_image])
            inp = MetricInput(ex.loaded.model, x, maps.to(ex.device), targets, ex.input_range,
                              map_source(ex, *key), masks, ids, None, self.chunk,
                              frozenset(self.figures.keep_ids))
            for name, metric in self.plan.metrics.items():
                result = metric(inp)
                self.stats.add(*key, name, result)
                self.figures.add(key, name, result, ids, images, maps, targets)
                lines += _rows(name, result, per_image)
        return lines

    def masks(self, items: list[InputImage]) -> torch.Tensor | None:
        if self.plan.masks is None:
            return None
        h, w = self.explainer.loaded.size
        found = [self.plan.masks.mask(it, self.explainer.pre) for it in items]
        absent = sum(m is None for m in found)
        if absent:
            self.progress.note(f"masks: {absent} image(s) of this batch have none (localisation undefined)")
        empty = torch.zeros((h, w), dtype=torch.bool)
        return torch.stack([m if m is not None else empty for m in found]).to(self.explainer.device)


def _rows(metric: str, result: MetricResult, per_image: list[list[ManifestRow]]) -> list[str]:
    """The evaluation.jsonl lines of one metric on one batch (see the module docstring)."""
    lines = []
    values = result.values
    fields = {k: v for k, v in result.fields.items()}
    for b, image_rows in enumerate(per_image):
        for k, row in enumerate(image_rows):
            base = {"image": row.image, "status": "ok", "method": row.method, "layer": row.layer,
                    "slot": row.slot, "target": row.target, "target_name": row.target_name, "rank": row.rank,
                    "metric": metric}
            if result.stages is None:
                extra = {name: _jsonable(f[b, k].tolist()) for name, f in fields.items()}
                lines.append(json.dumps({**base, "value": _jsonable(float(values[b, k])), **extra},
                                        allow_nan=False) + "\n")
                continue
            for s, stage in enumerate(result.stages):
                extra = {name: _jsonable(f[b, k, s].tolist()) for name, f in fields.items()}
                lines.append(json.dumps({**base, "stage_index": s + 1, "stage": stage,
                                         "value": _jsonable(float(values[b, k, s])), **extra},
                                        allow_nan=False) + "\n")
    return lines


__all__ = ["EVALUATION_JSON", "EVALUATION_JSONL", "EvaluationPlan", "EvaluationSummary", "Gate", "GateResult",
           "parse_gates", "plan_evaluation", "run_evaluate"]
