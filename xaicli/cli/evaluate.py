"""``xaicli evaluate``: explain, then score the explanations; quality gates exit 3
(see :mod:`xaicli.runs.evaluate`).

Thin: parse, call :func:`xaicli.runs.evaluate.run_evaluate`, print, let :mod:`xaicli.cli.errors` map
errors to exit codes. No torch import at module level, so ``--help`` is instant; the metric list in the
help comes from :data:`METRIC_NAMES`, checked against the registry by a test.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from xaicli.cli.errors import DebugOpt, mapped_errors
from xaicli.cli.options import (
    ConfigOpt,
    DeviceOpt,
    InputsArg,
    JsonOpt,
    JunitOpt,
    MarkdownOpt,
    OutdirOpt,
    QuietOpt,
)

METRIC_NAMES = ("deletion", "insertion", "road_morf", "road_lerf", "mprt", "random_logit", "pointing_game",
                "energy_pointing_game", "relevance_mass", "sparseness", "max_sensitivity")
"""The registry's metric names, for ``--help`` without importing torch (tests/test_cli_evaluate.py
checks that this equals ``xaicli.metrics.available_metrics()``)."""

EPILOG = ("Examples:\n\n"
          "  xaicli evaluate sample_images -c configs/fashion_mnist.yaml -o out "
          "--metrics deletion,insertion,mprt,sparseness\n\n"
          "  xaicli evaluate photos/ -c my.yaml -o out --fail-under insertion=0.5 "
          "--fail-over deletion=0.2\n\n"
          "  xaicli evaluate photos/ -c my.yaml -o out --metrics pointing_game,energy_pointing_game "
          "--masks masks/\n\n"
          "  xaicli evaluate golden/ -c ci.yaml -o out --fail-under insertion=0.5 "
          "--junit reports/evaluate.xml --markdown summary.md; code=$?; "
          "cat summary.md >> \"$GITHUB_STEP_SUMMARY\"; exit $code\n\n"
          "Metrics: " + ", ".join(METRIC_NAMES) + " (papers and options: `xaicli metrics`).\n\n"
          "Writes what `xaicli explain` writes, plus OUTDIR/evaluation.jsonl (one row per image x method x "
          "layer x target x metric), OUTDIR/evaluation.json (mean, std, median, n and the gates per method x "
          "layer x metric) and OUTDIR/figures/evaluate/, linked from OUTDIR/index.html.\n\n"
          "Exit codes: 0 every gate passed; 1 some inputs could not be read; 2 usage or config error "
          "(nothing run); 3 a gate failed (one line per failed gate on stderr); 4 the run failed.")


def _split(values: list[str] | None) -> list[str] | None:
    names = [v.strip() for value in values or [] for v in value.split(",") if v.strip()]
    return names or None


def evaluate(
    inputs: InputsArg,
    outdir: OutdirOpt,
    config: ConfigOpt = None,
    metrics: Annotated[list[str] | None, typer.Option(
        "--metrics", "-M",
        help="Metrics to compute (comma-separated or repeated); replaces evaluate.metrics.",
        show_default=False)] = None,
    masks: Annotated[str | None, typer.Option(
        "--masks", help="Object masks for the localisation metrics: a folder of <relative image path "
                        "without suffix>.png, or a .json / .csv file of boxes.", show_default=False)] = None,
    fail_under: Annotated[list[str] | None, typer.Option(
        "--fail-under", help="METRIC=VALUE: exit 3 when a method/layer's mean is below VALUE (repeatable).",
        show_default=False)] = None,
    fail_over: Annotated[list[str] | None, typer.Option(
        "--fail-over", help="METRIC=VALUE: exit 3 when a method/layer's mean is above VALUE (repeatable).",
        show_default=False)] = None,
    device: DeviceOpt = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Redo the explanations (without it, those already in the manifest are reused)."
    )] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    junit: JunitOpt = None,
    markdown: MarkdownOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Explain images, then measure the explanations: faithfulness, sanity checks, localisation, complexity
    and robustness; fail a CI job with exit code 3 when a gate is not met."""
    with mapped_errors(outdir, debug):
        from xaicli.config import apply_overrides, load_config
        from xaicli.runs.evaluate import parse_gates

        cfg = load_config(config)  # before any torch import: config errors answer instantly
        apply_overrides(cfg, device=device)
        under, over = parse_gates(fail_under or [], "fail_under"), parse_gates(fail_over or [], "fail_over")
        from xaicli.cli.progress import make_progress
        from xaicli.runs.evaluate import run_evaluate

        summary = run_evaluate(cfg, [str(p) for p in inputs], outdir, metrics=_split(metrics), masks=masks,
                               fail_under=under, fail_over=over, overwrite=overwrite,
                               progress=make_progress(quiet or json_out))
        if junit or markdown:
            from xaicli.runs.ci_cases import evaluate_report

            evaluate_report(summary).write(junit, markdown)
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _report(summary, quiet)
    for gate in summary.failed_gates:
        print(gate.line(), file=sys.stderr)
    raise typer.Exit(int(summary.exit_code))


def _report(summary, quiet: bool) -> None:
    err = sys.stderr
    for path, msg in summary.explain.failures + summary.failures:
        print(f"failed: {path}: {msg}", file=err)
    if quiet:
        return
    for rec in summary.stats:
        where = f"{rec['method']} @ {rec['layer']}" if rec["layer"] else rec["method"]
        value = "undefined" if rec["mean"] is None else f"{rec['mean']:.4f} ± {rec['std']:.4f}"
        arrow = "higher is better" if rec["higher_is_better"] else "lower is better"
        stage = " (last stage)" if rec.get("stages") else ""
        print(f"{rec['metric']:>20}  {where:<32} {value}  (n={rec['n']}; {arrow}){stage}", file=err)
    accuracy = summary.explain.accuracy.line()
    if accuracy:
        print(accuracy, file=err)
    passed = sum(g.passed for g in summary.gates)
    gates = f"; gates: {passed} of {len(summary.gates)} passed" if summary.gates else ""
    print(f"done: {summary.images} image(s) evaluated, {summary.rows} row(s) in "
          f"{summary.explain.outdir / 'evaluation.jsonl'} in {summary.seconds:.1f}s{gates}", file=err)


def register(app: typer.Typer) -> None:
    """Add the command to the ``xaicli`` app."""
    app.command(epilog=EPILOG)(evaluate)
