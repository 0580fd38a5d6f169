"""What ``xaicli diff`` leaves for people and CI displays: drift figures of the worst rows, the report
folder's ``index.html``, a JUnit file and a Markdown summary.

Drift figure (``REPORT_DIR/figures/drift/NN_<method>.png``), one per worst row: the baseline's overlay,
the candidate's overlay and the absolute difference of the two maps (black 0 to yellow 1 on a fixed
scale, so a small difference stays dark), captioned with the similarity and both predictions. When a run
wrote no overlays, its map is shown in the run's colours instead.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from xaicli.outputs import atomic
from xaicli.outputs.ci_reports import TestCase, markdown_table, write_junit
from xaicli.outputs.layout import escape_component, output_path
from xaicli.render.figures import FigureStyle, GridCell, GridRow, colourise, format_prob, render_grid
from xaicli.runs.diff import DiffSummary, worst_rows

DRIFT_DIR = "figures/drift"
DRIFT_INDEX = "figures/drift/drift.json"


def _panel(outdir: Path, overlay: str | None, map_rel: str | None) -> np.ndarray | None:
    """The run's overlay PNG, else its map coloured with jet, else None."""
    root = outdir.resolve()
    for rel, kind in ((overlay, "png"), (map_rel, "npy")):
        if not rel:
            continue
        path = (outdir / rel).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            continue
        try:
            if kind == "png":
                with Image.open(path) as im:
                    return np.asarray(im.convert("RGB"))
            values = np.load(path, allow_pickle=False).astype(np.float32)
            signed = bool((values < 0).any())
            return colourise(np.clip(values, -1 if signed else 0, 1), "jet", signed)
        except (OSError, ValueError):
            continue
    return None


def _difference(base: Path, cand: Path, row: dict[str, Any]) -> np.ndarray | None:
    try:
        a = np.load((base / row["baseline_map"]).resolve(), allow_pickle=False).astype(np.float32)
        b = np.load((cand / row["candidate_map"]).resolve(), allow_pickle=False).astype(np.float32)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if a.shape != b.shape:
        return None
    scale = 2.0 if (a < 0).any() or (b < 0).any() else 1.0  # signed maps span [-1, 1]
    return colourise(np.clip(np.abs(a - b) / scale, 0, 1), "inferno")


def _prediction(name: str | None, score: float | None) -> str:
    return f"{name} {format_prob(score)}" if score is not None else str(name)


def drift_figures(summary: DiffSummary, report_dir: Path, n: int) -> list[str]:
    """Draw the ``n`` worst rows; returns their paths relative to ``report_dir`` (and writes the index the
    report page reads)."""
    records, paths = [], []
    style = FigureStyle(cell_size=160, resample="nearest")
    for i, row in enumerate(worst_rows(summary, n), start=1):
        left = _panel(summary.baseline, row.get("baseline_overlay"), row.get("baseline_map"))
        right = _panel(summary.candidate, row.get("candidate_overlay"), row.get("candidate_map"))
        diff = _difference(summary.baseline, summary.candidate, row)
        sim = row.get("gated_similarity")
        sim_text = "undefined" if sim is None else f"{sim:.3f}"
        changed = " (prediction changed)" if row.get("prediction_changed") else ""
        cells = [GridCell(left, caption="baseline\n" + _prediction(row.get("baseline_target_name"),
                                                                  row.get("baseline_score"))),
                 GridCell(right, caption="candidate\n" + _prediction(row.get("candidate_target_name"),
                                                                    row.get("candidate_score")),
                          caption_alert=bool(row.get("prediction_changed"))),
                 GridCell(diff, caption=f"|difference|\n{summary.similarity} {sim_text}")]
        title = f"{row['rel']} · {row['method']} @ {row['layer'] or 'input'} · {row['slot']}"
        fig = render_grid([GridRow(f"#{i}", cells)], title=title,
                          subtitle=f"{summary.similarity} similarity {sim_text}{changed}",
                          legend=["difference: |baseline map - candidate map|, black = 0 to yellow = 1 "
                                  "(fixed scale, inferno)"], style=style)
        rel = f"{DRIFT_DIR}/{i:02d}_{escape_component(str(row['method']))}.png"
        atomic.write_bytes(output_path(report_dir, rel), fig.png_bytes())
        paths.append(rel)
        records.append({"kind": "drift", "path": rel, "title": title,
                        "class": row.get("baseline_target_name"), "methods": [row["method"]],
                        "layers": [row["layer"] or "input"], "images": [row["rel"]]})
    atomic.write_text(output_path(report_dir, DRIFT_INDEX), json.dumps({"figures": records}, indent=1) + "\n")
    return paths


# --- JUnit ---------------------------------------------------------------------------------------------


def junit_cases(summary: DiffSummary) -> list[TestCase]:
    """One case per image x method x layer (failed when any of its slots is below the similarity gate or
    unreadable; skipped when only one run has it), then one case per gate."""
    by_case: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in summary.rows:
        by_case[(row.get("rel"), row.get("method"), row.get("layer"))].append(row)
    cases = []
    for (rel, method, layer), rows in by_case.items():
        name = f"{rel} {method}@{layer or 'input'}" if method else str(rel)
        classname = f"xaicli.diff.{method}" if method else "xaicli.diff.images"
        bad = [r for r in rows if r["status"] == "unreadable" or r.get("passed") is False]
        if bad:
            lines = [_row_line(r) for r in bad]
            cases.append(TestCase(name, classname, failure=lines[0], details="\n".join(lines)))
        elif all(r["status"].startswith("only_in") for r in rows):
            cases.append(TestCase(name, classname, skipped=f"{rows[0]['status'].replace('_', ' ')}"))
        else:
            cases.append(TestCase(name, classname, output="\n".join(_row_line(r) for r in rows)))
    for gate in summary.gates:
        cases.append(TestCase(f"{gate.gate} {gate.subject}", "xaicli.diff.gates",
                              failure=None if gate.passed else gate.line()))
    return cases


def _row_line(row: dict[str, Any]) -> str:
    if row["status"] == "unreadable":
        return f"{row.get('slot') or row.get('side')}: unreadable: {row.get('error')}"
    if row["status"] != "matched":
        return f"{row.get('slot')}: {row['status'].replace('_', ' ')}"
    sim = row.get("gated_similarity")
    value = "undefined" if sim is None else f"{sim:.4f}"
    if not row.get("prediction_changed"):
        return f"{row['slot']}: similarity {value}"
    change = f"prediction {row['baseline_target_name']} -> {row['candidate_target_name']}"
    if row.get("class_similarity") is not None:  # the gate read the maps of the baseline's class
        return f"{row['slot']}: similarity of the {row['baseline_target_name']} maps {value} ({change})"
    return f"{row['slot']}: similarity {value} ({change}; the candidate has no map of the baseline's class)"


# --- Markdown ------------------------------------------------------------------------------------------


def markdown_report(summary: DiffSummary, n_worst: int) -> str:
    code = int(summary.exit_code)
    verdict = "passed" if code == 0 else ("FAILED" if summary.failed_gates else "passed with unreadable rows")
    counts: dict[str, int] = defaultdict(int)
    for r in summary.rows:
        counts[r["status"]] += 1
    parts = [f"## xaicli diff: {verdict} (exit {code})", "",
             f"Baseline `{summary.baseline}` vs candidate `{summary.candidate}`; similarity: "
             f"{summary.similarity}. Rows: {counts['matched']} matched, "
             f"{counts['only_in_baseline']} only in the baseline, "
             f"{counts['only_in_candidate']} only in the candidate, {counts['unreadable']} unreadable.",
             "", markdown_table(["method", "layer", "rows", "mean", "min", "rows below gate",
                                 "prediction changes"],
                                [[g["method"], g["layer"] or "input", g["rows"], g["mean_similarity"],
                                  g["min_similarity"], g["failed_rows"], g["prediction_changes"]]
                                 for g in summary.groups])]
    if summary.gates:
        parts += ["", "### Gates", "", markdown_table(
            ["gate", "subject", "value", "required", "result"],
            [[g.gate, g.subject, g.value, f"{g.symbol} {g.threshold:g}", "pass" if g.passed else "**FAIL**"]
             for g in summary.gates])]
    p = summary.predictions
    parts += ["", "### Predictions", "", f"Top-1 changed on {p['top1_changed']} of {p['images']} image(s)."]
    if p["labelled"]:
        parts[-1] += (f" Accuracy on {p['labelled']} labelled image(s): {p['baseline_accuracy']:.3f} -> "
                      f"{p['candidate_accuracy']:.3f} ({len(p['broken'])} now wrong, "
                      f"{len(p['fixed'])} now right).")
    if p["changes"]:
        parts += ["", markdown_table(["image", "label", "baseline", "candidate"],
                                     [[c["rel"], c["label"], _prediction(c["baseline"], c["baseline_score"]),
                                       _prediction(c["candidate"], c["candidate_score"])]
                                      for c in p["changes"][:20]])]
    if summary.metrics:
        parts += ["", "### Evaluation metrics", "", markdown_table(
            ["metric", "method", "layer", "baseline", "candidate", "drop"],
            [[m["metric"], m["method"], m["layer"] or "input", m["baseline"], m["candidate"], m["drop"]]
             for m in summary.metrics])]
    worst = worst_rows(summary, n_worst)
    if worst:
        parts += ["", f"### Worst {len(worst)} row(s)", "", markdown_table(
            ["image", "method", "layer", "slot", "similarity", "baseline", "candidate"],
            [[r["rel"], r["method"], r["layer"] or "input", r["slot"], r["gated_similarity"],
              _prediction(r["baseline_target_name"], r["baseline_score"]),
              _prediction(r["candidate_target_name"], r["candidate_score"])] for r in worst])]
    return "\n".join(parts) + "\n"


def write_reports(summary: DiffSummary, report_dir: Path, *, n_worst: int, junit: Path | None,
                  markdown: Path | None) -> None:
    """The JUnit and Markdown files where the user asked (they may lie outside REPORT_DIR, e.g.
    ``$GITHUB_STEP_SUMMARY``'s folder); ``report.md`` inside REPORT_DIR always."""
    text = markdown_report(summary, n_worst)
    atomic.write_text(output_path(report_dir, "report.md"), text)
    if markdown is not None:
        atomic.write_text(markdown, text)
    if junit is not None:
        write_junit(junit, "xaicli diff", junit_cases(summary),
                    {"baseline": str(summary.baseline), "candidate": str(summary.candidate),
                     "similarity": summary.similarity})


def failed_row_lines(summary: DiffSummary, limit: int = 20) -> Sequence[str]:
    """Lines for the rows below the similarity gate (the first ``limit``), for stderr."""
    bad = [r for r in summary.matched if r.get("passed") is False]
    lines = [f"  {r['rel']} {r['method']}@{r['layer'] or 'input'} {_row_line(r)}" for r in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more (see diff.jsonl)")
    return lines
