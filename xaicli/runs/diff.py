"""``xaicli diff``: compare two runs (a released model's and a candidate's) map by map, with gates for CI.

Rows of the two ``manifest.jsonl`` files are matched on what stays the same between runs started from
different machines or folders: the image's path below its input root (``rel``), method, layer and target
*slot* (top-1, top-2, ... or a fixed class). For each match the two ``.npy`` maps (model-input size, as
written by the runs) are compared with one similarity, the target's score change is recorded, and a
changed prediction is reported as such. When the prediction of a slot changed, the candidate's map of
the *baseline's* class (when the candidate explained that class in another slot) is compared too, and
that same-class similarity is what the per-row gate reads: a model that now ranks two classes the other
way round has not changed its explanation of either, and prediction changes have their own gate.

Exit codes: 0 within the gates; 3 a gate failed (one line each); 2 the runs cannot be compared
(missing manifest, different input size or classes, no common rows - the message says what differs);
1 some rows unreadable (error rows in a manifest, missing or unreadable maps). A failed gate wins.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xaicli.errors import ExitCode, UsageError, not_allowed
from xaicli.metrics.similarity import pearson, spearman, ssim, topk_iou
from xaicli.outputs import atomic
from xaicli.outputs.layout import MANIFEST, RUN_JSON
from xaicli.outputs.manifest import read_manifest

DIFF_JSONL = "diff.jsonl"
DIFF_JSON = "diff.json"
EVALUATION_JSON = "evaluation.json"
DEFAULT_MIN_SIMILARITY = 0.8
"""The default per-row gate. An unchanged model gives 1.0 on one machine and above 0.99 between CPU
fp32 and GPU bf16 runs; re-initialising the demo model's last block gives rows far below 0.8."""
DEFAULT_WORST = 8
BATCH = 512  # map pairs compared per tensor call

Key = tuple[str, str | None, str | None, str | None]  # rel, method, layer, slot


def _similarity_fns(top_fraction: float) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    def ssim_of(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # maps are normalised to [0, 1] (signed methods: [-1, 1]): the data range follows
        data_range = 2.0 if bool((a < 0).any() or (b < 0).any()) else 1.0
        return ssim(a, b, data_range)

    return {"spearman": lambda a, b: spearman(a, b),
            "pearson": lambda a, b: pearson(a.flatten(1), b.flatten(1)),
            "ssim": ssim_of,
            "topk_iou": lambda a, b: topk_iou(a, b, top_fraction)}


SIMILARITIES = ("spearman", "pearson", "ssim", "topk_iou")


class NotComparableError(UsageError):
    """The two runs cannot be compared (exit 2): the message says what differs."""


# --- the runs ------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """One output folder as ``diff`` reads it: its ok rows by key, its error rows, its ``run.json``."""

    outdir: Path
    run: dict[str, Any]
    rows: dict[Key, dict[str, Any]]
    errors: list[dict[str, Any]]
    evaluation: dict[str, Any] | None

    @property
    def label(self) -> str:
        return str(self.outdir)

    def map_of_class(self, rel: str, method: str | None, layer: str | None, target: int | None
                     ) -> dict[str, Any] | None:
        """The row of this run that explains class ``target`` of image ``rel`` with (method, layer)."""
        return self._by_class().get((rel, method, layer, target))

    def _by_class(self) -> dict[tuple, dict[str, Any]]:
        if not hasattr(self, "_class_index"):
            self._class_index = {(k[0], k[1], k[2], r.get("target")): r for k, r in self.rows.items()}
        return self._class_index


def _key(row: Mapping[str, Any]) -> Key:
    return (row.get("rel") or row.get("image") or "", row.get("method"), row.get("layer"), row.get("slot"))


def load_run(outdir: Path, role: str) -> RunRecord:
    """Read an ``explain`` / ``evaluate`` output folder; NotComparableError when it is not one."""
    if not outdir.is_dir():
        raise NotComparableError(f"{role} run {outdir}: not a folder")
    manifest = outdir / MANIFEST
    if not manifest.is_file():
        raise NotComparableError(f"{role} run {outdir}: no {MANIFEST} (not an output folder of "
                                 "`xaicli explain` or `xaicli evaluate`?)")
    rows: dict[Key, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = []
    for row in read_manifest(manifest):
        if row.get("status") == "ok":
            rows[_key(row)] = row
        else:
            errors.append(row)
    run = _read_json(outdir / RUN_JSON) or {}
    return RunRecord(outdir, run, rows, errors, _read_json(outdir / EVALUATION_JSON))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_comparable(base: RunRecord, cand: RunRecord) -> None:
    """Refuse runs whose maps cannot be compared pixel for pixel or whose classes differ."""
    pb = base.run.get("config", {}).get("preprocess", {}) or {}
    pc = cand.run.get("config", {}).get("preprocess", {}) or {}
    for key in ("size", "mode"):
        if pb.get(key) is not None and pc.get(key) is not None and pb.get(key) != pc.get(key):
            raise NotComparableError(f"the runs use different preprocessing: preprocess.{key} is "
                                     f"{pb.get(key)} in the baseline and {pc.get(key)} in the candidate; "
                                     "maps are compared pixel for pixel, so both runs need the same input "
                                     "size")
    cb, cc = base.run.get("classes"), cand.run.get("classes")
    if cb and cc and cb != cc:
        changed = [f"{i}: {a!r} -> {b!r}" for i, (a, b) in enumerate(zip(cb, cc, strict=False)) if a != b]
        what = f"{len(cb)} vs {len(cc)} classes" if len(cb) != len(cc) else "; ".join(changed[:3])
        raise NotComparableError(f"the runs have different classes ({what}); predictions cannot be compared")


def _no_common_rows(base: RunRecord, cand: RunRecord) -> NotComparableError:
    def summary(run: RunRecord) -> str:
        images = sorted({k[0] for k in run.rows})
        pairs = sorted({f"{k[1]}@{k[2] or 'input'}" for k in run.rows})
        slots = sorted({str(k[3]) for k in run.rows})
        return (f"{len(images)} image(s) (e.g. {', '.join(images[:2]) or '-'}), "
                f"methods {', '.join(pairs) or '-'}, slots {', '.join(slots) or '-'}")

    return NotComparableError(f"the runs have no rows in common (matched on image path below its input "
                              f"root x method x layer x slot): baseline has {summary(base)}; candidate has "
                              f"{summary(cand)}")


# --- gates ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffGates:
    """What fails a ``diff`` (exit 3). ``None`` switches a gate off.

    ``min_similarity``: every matched row's similarity; ``max_mean_drop``: per method x layer,
    ``1 - mean similarity``; ``max_prediction_changes``: images whose top-1 class changed;
    ``max_metric_drop``: per ``evaluate`` metric found in both runs, how much worse the candidate's mean
    may be (lower for higher-is-better metrics, higher otherwise); ``fail_under`` / ``fail_over``: bounds
    on the candidate's metric means, as ``evaluate`` applies them.
    """

    min_similarity: float | None = DEFAULT_MIN_SIMILARITY
    max_mean_drop: float | None = None
    max_prediction_changes: int | None = None
    max_metric_drop: Mapping[str, float] = field(default_factory=dict)
    fail_under: Mapping[str, float] = field(default_factory=dict)
    fail_over: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"min_similarity": self.min_similarity, "max_mean_drop": self.max_mean_drop,
                "max_prediction_changes": self.max_prediction_changes,
                "max_metric_drop": dict(self.max_metric_drop), "fail_under": dict(self.fail_under),
                "fail_over": dict(self.fail_over)}


@dataclass
class GateCheck:
    """One gate applied to one subject (a method x layer, the run, a metric)."""

    gate: str  # e.g. "max_mean_drop"
    subject: str  # e.g. "gradcam @ features.1.bn"
    value: float | None
    threshold: float
    symbol: str  # the relation that must hold: value <symbol> threshold
    passed: bool

    def line(self) -> str:
        value = "undefined" if self.value is None else f"{self.value:.4g}"
        return (f"gate failed: {self.gate.replace('_', '-')} of {self.subject} = {value}, required "
                f"{self.symbol} {self.threshold:g} (--{self.gate.replace('_', '-')})")

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "subject": self.subject, "value": self.value, "threshold": self.threshold,
                "relation": self.symbol, "passed": self.passed}


def _check(gate: str, subject: str, value: float | None, threshold: float, symbol: str) -> GateCheck:
    ok = value is not None and (value >= threshold if symbol == ">=" else value <= threshold)
    return GateCheck(gate, subject, value, threshold, symbol, ok)


# --- the comparison ------------------------------------------------------------------------------------


@dataclass
class DiffSummary:
    baseline: Path
    candidate: Path
    report_dir: Path
    similarity: str
    rows: list[dict[str, Any]]  # every diff.jsonl row
    groups: list[dict[str, Any]]
    predictions: dict[str, Any]
    metrics: list[dict[str, Any]]
    gates: list[GateCheck]
    figures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def matched(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "matched"]

    @property
    def unreadable(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "unreadable"]

    @property
    def failed_gates(self) -> list[GateCheck]:
        return [g for g in self.gates if not g.passed]

    @property
    def exit_code(self) -> ExitCode:
        if self.failed_gates:
            return ExitCode.GATE_FAILED
        return ExitCode.INPUTS_UNREADABLE if self.unreadable else ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = defaultdict(int)
        for r in self.rows:
            counts[r["status"]] += 1
        return {"baseline": str(self.baseline), "candidate": str(self.candidate),
                "report_dir": str(self.report_dir), "similarity": self.similarity, "rows": dict(counts),
                "groups": self.groups, "predictions": self.predictions, "metrics": self.metrics,
                "gates": [g.to_dict() for g in self.gates], "passed": not self.failed_gates,
                "figures": self.figures, "seconds": round(self.seconds, 3), "exit_code": int(self.exit_code)}


def _finite(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


def _read_map(run: RunRecord, row: Mapping[str, Any]) -> np.ndarray:
    rel = row.get("map")
    if not rel:
        raise ValueError("the run wrote no map for this row (output.maps: false)")
    path = (run.outdir / rel).resolve()
    if not path.is_relative_to(run.outdir.resolve()):
        raise ValueError(f"map path {rel!r} points outside the run folder")
    return np.load(path, allow_pickle=False)


def _similarities(pairs: list[tuple[np.ndarray, np.ndarray]], fn) -> list[float | None]:
    """Similarity of each (baseline, candidate) pair; pairs of one shape are compared in batches.
    Identical maps are 1.0 by definition (also when constant, where correlations are undefined)."""
    out: list[float | None] = [None] * len(pairs)
    by_shape: dict[tuple, list[int]] = defaultdict(list)
    for i, (a, b) in enumerate(pairs):
        if a.shape != b.shape:
            raise ValueError(f"map shapes differ: {a.shape} vs {b.shape}")
        by_shape[a.shape].append(i)
    for idx in by_shape.values():
        for start in range(0, len(idx), BATCH):
            part = idx[start:start + BATCH]
            a = torch.from_numpy(np.stack([pairs[i][0] for i in part]).astype(np.float64))
            b = torch.from_numpy(np.stack([pairs[i][1] for i in part]).astype(np.float64))
            values = fn(a.reshape(len(part), *a.shape[-2:]), b.reshape(len(part), *b.shape[-2:])).tolist()
            for i, v in zip(part, values, strict=True):
                same = np.array_equal(pairs[i][0], pairs[i][1])
                out[i] = 1.0 if same else _finite(v)
    return out


def compare_runs(base: RunRecord, cand: RunRecord, *, similarity: str = "spearman",
                 top_fraction: float = 0.1) -> list[dict[str, Any]]:
    """The ``diff.jsonl`` rows: one per matched key (``matched`` or ``unreadable``), one per key only one
    run has (``only_in_baseline`` / ``only_in_candidate``) and one per error row of either manifest."""
    fns = _similarity_fns(top_fraction)
    if similarity not in fns:
        raise UsageError(f"--similarity: {not_allowed(similarity, SIMILARITIES)}")
    fn = fns[similarity]
    rows: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], str, np.ndarray, np.ndarray]] = []
    for key, b in base.rows.items():
        c = cand.rows.get(key)
        if c is None:
            rows.append(_unmatched(key, b, "only_in_baseline"))
            continue
        row = _matched_row(key, b, c)
        rows.append(row)
        try:
            pending.append((row, "similarity", _read_map(base, b), _read_map(cand, c)))
            if row["prediction_changed"]:
                same_class = cand.map_of_class(key[0], key[1], key[2], b.get("target"))
                if same_class is not None:
                    row["class_slot"] = same_class.get("slot")
                    row["class_score_change"] = _delta(same_class.get("score"), b.get("score"))
                    pending.append((row, "class_similarity", _read_map(base, b), _read_map(cand, same_class)))
        except (OSError, ValueError) as err:
            row.update(status="unreadable", error=f"cannot read a map: {err}")
    rows += [_unmatched(k, c, "only_in_candidate") for k, c in cand.rows.items() if k not in base.rows]
    for run, side in ((base, "baseline"), (cand, "candidate")):
        rows += [{"rel": e.get("rel") or e.get("image"), "image": e.get("image"), "status": "unreadable",
                  "side": side, "error": e.get("error")} for e in run.errors]
    ok = [p for p in pending if p[0]["status"] == "matched"]
    try:
        values = _similarities([(a, b) for _, _, a, b in ok], fn)
    except ValueError:  # a shape mismatch: find the rows one by one
        values = []
        for row, _, a, b in ok:
            try:
                values += _similarities([(a, b)], fn)
            except ValueError as err:
                row.update(status="unreadable", error=str(err))
                values.append(None)
    for (row, name, _, _), value in zip(ok, values, strict=True):
        if row["status"] == "matched":
            row[name] = value
    for row in rows:
        if row["status"] == "matched":
            row["gated_similarity"] = row.get("class_similarity", row["similarity"]) \
                if row["prediction_changed"] and row.get("class_similarity") is not None \
                else row["similarity"]
    return rows


def _delta(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None else round(new - old, 6)


def _matched_row(key: Key, b: Mapping[str, Any], c: Mapping[str, Any]) -> dict[str, Any]:
    rel, method, layer, slot = key
    return {"rel": rel, "method": method, "layer": layer, "slot": slot, "status": "matched",
            "similarity": None,
            "baseline_target": b.get("target"), "baseline_target_name": b.get("target_name"),
            "candidate_target": c.get("target"), "candidate_target_name": c.get("target_name"),
            "baseline_score": b.get("score"), "candidate_score": c.get("score"),
            "score_change": _delta(c.get("score"), b.get("score")),
            "prediction_changed": b.get("target") != c.get("target"),
            "label": b.get("label") or c.get("label"),
            "baseline_map": b.get("map"), "candidate_map": c.get("map"),
            "baseline_overlay": b.get("overlay"), "candidate_overlay": c.get("overlay")}


def _unmatched(key: Key, row: Mapping[str, Any], status: str) -> dict[str, Any]:
    rel, method, layer, slot = key
    return {"rel": rel, "method": method, "layer": layer, "slot": slot, "status": status,
            "target_name": row.get("target_name")}


# --- summaries -----------------------------------------------------------------------------------------


def group_stats(rows: Sequence[dict[str, Any]], min_similarity: float | None, worst: int = 5
                ) -> list[dict[str, Any]]:
    """Per method x layer: rows, mean / median / min similarity, failed rows, slot prediction changes and
    the worst images."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["status"] == "matched":
            groups[(r["method"], r["layer"])].append(r)
    out = []
    for (method, layer), members in groups.items():
        values = [r["gated_similarity"] for r in members if r["gated_similarity"] is not None]
        ranked = sorted(members, key=_badness)
        out.append({
            "method": method, "layer": layer, "rows": len(members),
            "mean_similarity": _finite(statistics.fmean(values)) if values else None,
            "median_similarity": _finite(statistics.median(values)) if values else None,
            "min_similarity": _finite(min(values)) if values else None,
            "undefined": len(members) - len(values),
            "failed_rows": sum(not _row_passes(r, min_similarity) for r in members),
            "prediction_changes": sum(bool(r["prediction_changed"]) for r in members),
            "worst": [{"rel": r["rel"], "slot": r["slot"], "similarity": r["gated_similarity"]}
                      for r in ranked[:worst]],
        })
    return out


def _badness(row: Mapping[str, Any]) -> float:
    v = row.get("gated_similarity")
    return -math.inf if v is None else v


def _row_passes(row: Mapping[str, Any], min_similarity: float | None) -> bool:
    if min_similarity is None:
        return True
    v = row.get("gated_similarity")
    return v is not None and v >= min_similarity


def prediction_changes(base: RunRecord, cand: RunRecord) -> dict[str, Any]:
    """Top-1 predictions per image in both runs, and flips against the labels. The prediction is the
    manifest's ``predicted`` field (every row of an image carries it, also when only fixed classes or the
    true class were explained), else the class of the image's ``top1`` row."""
    def top1(run: RunRecord) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for k, r in run.rows.items():
            name = r.get("predicted") or (r.get("target_name") if k[3] == "top1" else None)
            if name is not None and (k[0] not in out or k[3] == "top1"):
                score = r.get("score") if k[3] == "top1" else out.get(k[0], {}).get("score")
                out[k[0]] = {"name": name, "score": score, "label": r.get("label")}
        return out

    tb, tc = top1(base), top1(cand)
    common = sorted(set(tb) & set(tc))
    changed = [{"rel": rel, "label": tb[rel]["label"], "baseline": tb[rel]["name"],
                "candidate": tc[rel]["name"], "baseline_score": tb[rel]["score"],
                "candidate_score": tc[rel]["score"]}
               for rel in common if tb[rel]["name"] != tc[rel]["name"]]
    labelled = [rel for rel in common if tb[rel]["label"]]
    right_b = {rel for rel in labelled if tb[rel]["name"] == tb[rel]["label"]}
    right_c = {rel for rel in labelled if tc[rel]["name"] == tb[rel]["label"]}
    return {"images": len(common), "top1_changed": len(changed), "changes": changed,
            "labelled": len(labelled),
            "baseline_accuracy": _finite(len(right_b) / len(labelled)) if labelled else None,
            "candidate_accuracy": _finite(len(right_c) / len(labelled)) if labelled else None,
            "fixed": sorted(right_c - right_b), "broken": sorted(right_b - right_c)}


def metric_changes(base: RunRecord, cand: RunRecord) -> list[dict[str, Any]]:
    """``evaluate`` metric means found in both runs (per method x layer x metric) and their change."""
    def means(run: RunRecord) -> dict[tuple, dict[str, Any]]:
        recs = (run.evaluation or {}).get("summary") or []
        return {(r.get("method"), r.get("layer"), r.get("metric")): r for r in recs if isinstance(r, dict)}

    mb, mc = means(base), means(cand)
    out = []
    for key in sorted(set(mb) & set(mc), key=str):
        b, c = mb[key], mc[key]
        higher = bool(c.get("higher_is_better", b.get("higher_is_better", True)))
        vb, vc = b.get("mean"), c.get("mean")
        drop = None if vb is None or vc is None else (vb - vc if higher else vc - vb)
        out.append({"method": key[0], "layer": key[1], "metric": key[2], "baseline": vb, "candidate": vc,
                    "drop": _finite(drop) if drop is not None else None, "higher_is_better": higher})
    return out


def check_gates(gates: DiffGates, rows: Sequence[dict[str, Any]], groups: Sequence[dict[str, Any]],
                predictions: Mapping[str, Any], metrics: Sequence[dict[str, Any]],
                base: RunRecord, cand: RunRecord) -> list[GateCheck]:
    """Every gate that applies, passed or not. A metric named in a metric gate that is not in both runs'
    ``evaluation.json`` is a usage error (exit 2): a gate that silently checks nothing is worse than none."""
    checks: list[GateCheck] = []
    for g in groups:
        subject = f"{g['method']} @ {g['layer'] or 'input'}"
        if gates.min_similarity is not None:
            checks.append(GateCheck("min_similarity", subject, g["min_similarity"], gates.min_similarity,
                                    ">=", g["failed_rows"] == 0))
        if gates.max_mean_drop is not None:
            drop = None if g["mean_similarity"] is None else round(1.0 - g["mean_similarity"], 6)
            checks.append(_check("max_mean_drop", subject, drop, gates.max_mean_drop, "<="))
    if gates.max_prediction_changes is not None:
        checks.append(_check("max_prediction_changes", "top-1 predictions", predictions["top1_changed"],
                             gates.max_prediction_changes, "<="))
    named = set(gates.max_metric_drop) | set(gates.fail_under) | set(gates.fail_over)
    found = {m["metric"] for m in metrics}
    missing = sorted(named - found)
    if missing:
        have = lambda run: sorted({r.get("metric") for r in (run.evaluation or {}).get("summary") or []})  # noqa: E731
        raise NotComparableError(
            f"metric gate(s) on {', '.join(missing)}: not in both runs' {EVALUATION_JSON} (baseline has "
            f"{', '.join(have(base)) or 'none'}; candidate has {', '.join(have(cand)) or 'none'}); run "
            "`xaicli evaluate` with those metrics for both models")
    for m in metrics:
        subject = f"{m['metric']} of {m['method']} @ {m['layer'] or 'input'}"
        if m["metric"] in gates.max_metric_drop:
            checks.append(_check("max_metric_drop", subject, m["drop"], gates.max_metric_drop[m["metric"]],
                                 "<="))
        if m["metric"] in gates.fail_under:
            checks.append(_check("fail_under", subject, m["candidate"], gates.fail_under[m["metric"]], ">="))
        if m["metric"] in gates.fail_over:
            checks.append(_check("fail_over", subject, m["candidate"], gates.fail_over[m["metric"]], "<="))
    return checks


def diff_runs(baseline: Path, candidate: Path, *, similarity: str = "spearman", top_fraction: float = 0.1,
              gates: DiffGates = DiffGates()) -> DiffSummary:
    """Compare two output folders (the library entry point: no files written)."""
    import time

    t0 = time.perf_counter()
    if not 0.0 < top_fraction <= 1.0:
        raise UsageError(f"--top-fraction must be in (0, 1], got {top_fraction}")
    base, cand = load_run(baseline, "baseline"), load_run(candidate, "candidate")
    check_comparable(base, cand)
    if not set(base.rows) & set(cand.rows):
        raise _no_common_rows(base, cand)
    rows = compare_runs(base, cand, similarity=similarity, top_fraction=top_fraction)
    groups = group_stats(rows, gates.min_similarity)
    predictions = prediction_changes(base, cand)
    metrics = metric_changes(base, cand)
    checks = check_gates(gates, rows, groups, predictions, metrics, base, cand)
    for row in rows:
        if row["status"] == "matched":
            row["passed"] = _row_passes(row, gates.min_similarity)
    return DiffSummary(baseline, candidate, Path(), similarity, rows, groups, predictions, metrics, checks,
                       seconds=time.perf_counter() - t0)


def worst_rows(summary: DiffSummary, n: int) -> list[dict[str, Any]]:
    """The ``n`` matched rows with the lowest (gated) similarity, undefined first."""
    return sorted(summary.matched, key=_badness)[:n]


def write_diff(summary: DiffSummary, report_dir: Path) -> None:
    """``diff.jsonl`` (one row per line, strict JSON) and ``diff.json`` (the summary)."""
    lines = "".join(json.dumps(r, allow_nan=False, ensure_ascii=False) + "\n" for r in summary.rows)
    atomic.write_text(report_dir / DIFF_JSONL, lines)
    atomic.write_text(report_dir / DIFF_JSON, json.dumps(summary.to_dict(), indent=1, allow_nan=False) + "\n")


def run_diff(baseline: Path, candidate: Path, report_dir: Path, *, similarity: str = "spearman",
             top_fraction: float = 0.1, gates: DiffGates = DiffGates(), worst: int = DEFAULT_WORST,
             junit: Path | None = None, markdown: Path | None = None) -> DiffSummary:
    """The ``xaicli diff`` use case: compare, then write ``diff.jsonl``, ``diff.json``, the drift figures,
    ``report.md``, ``index.html`` and the JUnit / Markdown files asked for. The reports are written
    whatever the outcome (a failed gate is exactly when a CI job needs them)."""
    from xaicli.runs.diff_report import drift_figures, write_reports
    from xaicli.runs.report import write_report

    for run, role in ((baseline, "baseline"), (candidate, "candidate")):
        if report_dir.resolve() == run.resolve():
            raise UsageError(f"-o {report_dir}: the report folder is the {role} run itself; "
                             "pick another folder")
    if worst < 0:
        raise UsageError(f"--worst must be >= 0, got {worst}")
    summary = diff_runs(baseline, candidate, similarity=similarity, top_fraction=top_fraction, gates=gates)
    summary.report_dir = report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    summary.figures = drift_figures(summary, report_dir, worst)
    write_diff(summary, report_dir)
    write_reports(summary, report_dir, n_worst=worst, junit=junit, markdown=markdown)
    verdict = "passed" if not summary.failed_gates else "FAILED"
    write_report(report_dir, f"xaicli diff ({verdict}): {baseline} vs {candidate}")
    return summary
