"""What the CI reports of ``explain`` and ``evaluate`` say (``--junit FILE``, ``--markdown FILE``).

A run becomes a test suite: one test case per image (classname ``xaicli.explain`` or
``xaicli.evaluate``), failed when the image could not be read, explained or evaluated, with the error
as its message. An image whose top-1 class differs from its label is *not* a failure - a model is
allowed to be wrong on an image, and the gates are where a job decides how wrong is too wrong - but its
``<system-out>`` and the Markdown say so. For ``evaluate`` each gate is a test case too, failed with its
value and threshold.

The Markdown is a summary (images, explained, failed, accuracy, gates) and tables of what went wrong,
written for a job summary: a CI step appends the file to ``$GITHUB_STEP_SUMMARY`` (``cat FILE >>
"$GITHUB_STEP_SUMMARY"``). The files are written whatever the exit code (1: unreadable images, 3: a
failed gate); the formats are :mod:`xaicli.outputs.ci_reports`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xaicli.naming import printable
from xaicli.outputs import atomic
from xaicli.outputs.ci_reports import TestCase, markdown_table, write_junit
from xaicli.runs.outcomes import Accuracy, ImageOutcome
from xaicli.runs.summary import RunSummary

if TYPE_CHECKING:  # evaluate imports torch; the reports of explain must not need it
    from xaicli.runs.evaluate import EvaluationSummary, GateResult

ROWS_SHOWN = 20
"""Rows per Markdown table (the rest is counted): a job summary is read by people."""


@dataclass
class CiReport:
    """One run as a test suite (``cases``) and a Markdown summary (``markdown``)."""

    suite: str
    cases: list[TestCase]
    markdown: str
    properties: dict[str, str]

    def write(self, junit: Path | None = None, markdown: Path | None = None) -> list[Path]:
        """Write the files asked for (parent folders created; an existing file is replaced)."""
        written = []
        if junit is not None:
            written.append(write_junit(junit, self.suite, self.cases, self.properties))
        if markdown is not None:
            text = self.markdown.encode("utf-8", "backslashreplace").decode("utf-8")  # names not UTF-8
            atomic.write_text(markdown, text)
            written.append(markdown)
        return written


def image_case(outcome: ImageOutcome, classname: str, error: str | None = None) -> TestCase:
    """The test case of one image: failed with its error, else passed with its prediction and label."""
    error = error or outcome.error
    if error is not None:
        return TestCase(outcome.rel, classname, failure=error, details=f"{outcome.image}: {error}")
    return TestCase(outcome.rel, classname, output=_prediction(outcome))


def _prediction(o: ImageOutcome) -> str:
    predicted = o.predicted or "unknown"
    if o.label is None:
        return f"predicted {predicted}; no label"
    if o.misclassified:
        return (f"predicted {predicted}, label {o.label}: the top-1 class differs from the label "
                "(not a failure)")
    return f"predicted {predicted}, label {o.label}"


def gate_case(gate: GateResult) -> TestCase:
    where = f"{gate.method} @ {gate.layer or 'input'}"
    name = f"gate {gate.gate.metric} {gate.gate.symbol} {gate.gate.threshold:g}: {where}"
    value = "undefined" if gate.value is None else f"{gate.value:.4g}"
    if gate.passed:
        return TestCase(name, "xaicli.evaluate", output=f"{gate.gate.metric} of {where} = {value}")
    return TestCase(name, "xaicli.evaluate", failure=gate.line())


def explain_report(summary: RunSummary, command: str = "explain") -> CiReport:
    """The report of an ``explain`` run."""
    cases = [image_case(o, f"xaicli.{command}") for o in summary.outcomes]
    lines = [f"## xaicli {command}: {summary.images_total} image(s)", "", _summary_table(summary), ""]
    lines += _image_sections(summary.outcomes, summary)
    return CiReport(f"xaicli {command}", cases, "\n".join(lines).rstrip() + "\n",
                    _properties(summary))


def evaluate_report(summary: EvaluationSummary) -> CiReport:
    """The report of an ``evaluate`` run: its images (failed when not explained or not evaluated), then its
    gates."""
    run = summary.explain
    not_evaluated = dict(summary.failures)
    cases = [image_case(o, "xaicli.evaluate", not_evaluated.get(o.image)) for o in run.outcomes]
    cases += [gate_case(g) for g in summary.gates]
    passed = sum(g.passed for g in summary.gates)
    gates = f"{passed} of {len(summary.gates)} passed" if summary.gates else "none"
    lines = [f"## xaicli evaluate: {run.images_total} image(s)", "",
             _summary_table(run, evaluated=summary.images, gates=gates), ""]
    if summary.gates:
        lines += ["### Gates", "", markdown_table(
            ["result", "metric", "method @ layer", "value", "required"],
            [["FAILED" if not g.passed else "passed", g.gate.metric, f"{g.method} @ {g.layer or 'input'}",
              g.value, f"{g.gate.symbol} {g.gate.threshold:g}"]
             for g in sorted(summary.gates, key=lambda g: g.passed)]), ""]
    if summary.stats:
        lines += ["### Metrics", "", markdown_table(
            ["metric", "method @ layer", "mean", "std", "n", "better"],
            [[r["metric"], f"{r['method']} @ {r['layer'] or 'input'}", r["mean"], r["std"], r["n"],
              "higher" if r["higher_is_better"] else "lower"] for r in summary.stats]), ""]
    failed = [(p, e) for p, e in summary.failures if p not in {o.image for o in run.outcomes if not o.ok}]
    if failed:
        lines += ["### Not evaluated", "", _capped(["image", "error"], [[printable(p), printable(e)]
                                                                        for p, e in failed]), ""]
    lines += _image_sections(run.outcomes, run)
    return CiReport("xaicli evaluate", cases, "\n".join(lines).rstrip() + "\n", _properties(run))


def _properties(summary: RunSummary) -> dict[str, str]:
    acc = summary.accuracy
    props = {"outdir": str(summary.outdir), "device": summary.device}
    if acc.value is not None:
        props.update(accuracy=f"{acc.value:.6f}", labelled=str(acc.labelled))
    return props


def _summary_table(summary: RunSummary, **more: object) -> str:
    acc = summary.accuracy
    accuracy = "-" if acc.value is None else f"{acc.value:.4f} ({acc.correct} of {acc.labelled} labelled)"
    headers = ["images", "explained", "resumed", "failed", "accuracy", *(k for k in more)]
    row = [summary.images_total, summary.images_explained, summary.images_skipped, len(summary.failures),
           accuracy, *more.values()]
    return markdown_table(headers, [row])


def _image_sections(outcomes: Sequence[ImageOutcome], summary: RunSummary) -> list[str]:
    lines: list[str] = []
    failed = [o for o in outcomes if not o.ok]
    if failed:
        lines += ["### Failed images", "",
                  _capped(["image", "error"], [[printable(o.rel), printable(o.error)] for o in failed]), ""]
    wrong = [o for o in outcomes if o.misclassified]
    if wrong:
        lines += ["### Top-1 class differs from the label (not failures)", "",
                  _capped(["image", "label", "predicted"], [[printable(o.rel), o.label, o.predicted]
                                                            for o in wrong]), ""]
    acc: Accuracy = summary.accuracy
    if acc.confusion:
        lines += ["### Confusion pairs", "",
                  _capped(["label", "predicted", "images"], [list(t) for t in acc.confusion]), ""]
    if summary.warnings:
        lines += ["### Warnings", ""] + [f"- {printable(w)}" for w in summary.warnings] + [""]
    return lines


def _capped(headers: list[str], rows: list[list[object]]) -> str:
    table = markdown_table(headers, rows[:ROWS_SHOWN])
    if len(rows) > ROWS_SHOWN:
        table += f"\n\n... and {len(rows) - ROWS_SHOWN} more"
    return table
