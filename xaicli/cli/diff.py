"""``xaicli diff``: compare two runs map by map; gates exit 3 (see :mod:`xaicli.runs.diff`).

Thin: parse, call :func:`xaicli.runs.diff.run_diff`, print, let :mod:`xaicli.cli.errors` map errors to
exit codes. No torch import at module level, so ``--help`` stays instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from xaicli.cli.errors import DebugOpt, mapped_errors
from xaicli.cli.options import JsonOpt, QuietOpt

EPILOG = (
    "Examples:\n\n"
    "  xaicli diff runs/released runs/candidate -o diff-report\n\n"
    "  xaicli diff baseline/ candidate/ -o report --min-similarity 0.9 --max-prediction-changes 2 "
    "--junit report/junit.xml --markdown report/summary.md\n\n"
    "  xaicli diff baseline/ candidate/ -o report --max-metric-drop insertion=0.02   (evaluate runs)\n\n"
    "In a GitHub Actions step: `cat summary.md >> \"$GITHUB_STEP_SUMMARY\"`.\n\n"
    "Rows are matched on image path below its input root x method x layer x target slot (top1, top2, ... "
    "or a fixed class), so runs started from different folders, machines or devices compare. When a "
    "slot's prediction changed, the candidate's map of the baseline's class (if it has one) is compared "
    "and gated instead. Writes REPORT_DIR/diff.jsonl (one row per match and per unmatched or unreadable "
    "row), diff.json (per method x layer: mean/min similarity, prediction changes, worst images; gates), "
    "report.md, figures/drift/*.png (baseline | candidate | difference for the worst rows) and "
    "index.html.\n\n"
    "Exit codes: 0 within the gates; 1 some rows unreadable; 2 the runs cannot be compared (the message "
    "says what differs) or a usage error; 3 a gate failed (one line per failed gate on stderr); 4 the "
    "command failed.")


def _pairs(values: list[str] | None, flag: str) -> dict[str, float]:
    from xaicli.runs.evaluate import parse_gates

    return parse_gates(values or [], flag)


def diff(
    baseline: Annotated[Path, typer.Argument(help="The reference run's output folder (e.g. the released "
                                                   "model's).", show_default=False)],
    candidate: Annotated[Path, typer.Argument(help="The run to check against it.", show_default=False)],
    report_dir: Annotated[Path, typer.Option("--out", "-o", help="Report folder (created if missing).",
                                             show_default=False)],
    similarity: Annotated[str, typer.Option(
        "--similarity", help="pearson, spearman (rank correlation), ssim, or topk_iou (IoU of the top "
                             "--top-fraction pixels).")] = "spearman",
    top_fraction: Annotated[float, typer.Option("--top-fraction", help="Pixels counted by topk_iou.")] = 0.1,
    min_similarity: Annotated[float | None, typer.Option(
        "--min-similarity", help="Fail when any matched row is less similar (default 0.8; --no-row-gate to "
                                 "switch off).", show_default=False)] = None,
    no_row_gate: Annotated[bool, typer.Option("--no-row-gate", help="Report similarities without the "
                                                                     "per-row gate.")] = False,
    max_mean_drop: Annotated[float | None, typer.Option(
        "--max-mean-drop", help="Fail when 1 - mean similarity of a method x layer is larger.",
        show_default=False)] = None,
    max_prediction_changes: Annotated[int | None, typer.Option(
        "--max-prediction-changes", help="Fail when more images change their top-1 class (default: "
                                         "changes are reported, not failed).", show_default=False)] = None,
    max_metric_drop: Annotated[list[str] | None, typer.Option(
        "--max-metric-drop", help="METRIC=X: fail when an evaluate metric found in both runs gets worse "
                                  "by more than X (repeatable).", show_default=False)] = None,
    fail_under: Annotated[list[str] | None, typer.Option(
        "--fail-under", help="METRIC=X: fail when the candidate's mean is below X.",
        show_default=False)] = None,
    fail_over: Annotated[list[str] | None, typer.Option(
        "--fail-over", help="METRIC=X: fail when the candidate's mean is above X.",
        show_default=False)] = None,
    worst: Annotated[int, typer.Option("--worst", help="Drift figures and Markdown rows for this many "
                                                       "worst rows.")] = 8,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML file here (one test case "
                                                               "per image x method x layer, one per gate).",
                                               show_default=False)] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Write a Markdown summary here "
                                                                     "(e.g. for $GITHUB_STEP_SUMMARY).",
                                                  show_default=False)] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Compare two runs of `explain` or `evaluate` map by map, for a CI job that guards a model release:
    similarity of every map, prediction changes, metric changes; exit 3 when a gate fails."""
    with mapped_errors(report_dir, debug, json_out):
        from xaicli.errors import UsageError
        from xaicli.runs.diff import DEFAULT_MIN_SIMILARITY, DiffGates, run_diff

        if no_row_gate and min_similarity is not None:
            raise UsageError("--min-similarity and --no-row-gate contradict each other; give one")
        gates = DiffGates(
            min_similarity=None if no_row_gate else (DEFAULT_MIN_SIMILARITY if min_similarity is None
                                                     else min_similarity),
            max_mean_drop=max_mean_drop, max_prediction_changes=max_prediction_changes,
            max_metric_drop=_pairs(max_metric_drop, "max_metric_drop"),
            fail_under=_pairs(fail_under, "fail_under"), fail_over=_pairs(fail_over, "fail_over"))
        summary = run_diff(baseline, candidate, report_dir, similarity=similarity, top_fraction=top_fraction,
                           gates=gates, worst=worst, junit=junit, markdown=markdown)
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    elif not quiet:
        _report(summary)
    from xaicli.runs.diff_report import failed_row_lines

    for gate in summary.failed_gates:
        print(gate.line(), file=sys.stderr)
        if gate.gate == "min_similarity":
            for line in failed_row_lines(summary):
                print(line, file=sys.stderr)
    raise typer.Exit(int(summary.exit_code))


def _report(summary) -> None:
    err = sys.stderr
    for row in summary.unreadable:
        print(f"unreadable: {row.get('rel')} {row.get('method') or ''}: {row.get('error')}", file=err)
    for g in summary.groups:
        mean = "undefined" if g["mean_similarity"] is None else f"{g['mean_similarity']:.4f}"
        low = "undefined" if g["min_similarity"] is None else f"{g['min_similarity']:.4f}"
        print(f"{g['method']} @ {g['layer'] or 'input'}: {g['rows']} row(s), {summary.similarity} "
              f"mean {mean}, min {low}, {g['failed_rows']} below the gate, "
              f"{g['prediction_changes']} prediction change(s)",
              file=err)
    p = summary.predictions
    acc = (f"; accuracy {p['baseline_accuracy']:.3f} -> {p['candidate_accuracy']:.3f}"
           if p["labelled"] else "")
    passed = sum(g.passed for g in summary.gates)
    print(f"done: top-1 changed on {p['top1_changed']} of {p['images']} image(s){acc}; gates: {passed} of "
          f"{len(summary.gates)} passed; report in {summary.report_dir}", file=err)


def register(app: typer.Typer) -> None:
    """Add the command to the ``xaicli`` app."""
    app.command(epilog=EPILOG)(diff)
