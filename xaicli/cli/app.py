"""The ``xaicli`` command line. Each command parses, calls one use case of :mod:`xaicli.runs`, and lets
:func:`xaicli.cli.errors.mapped_errors` map what escapes to an exit code (:class:`xaicli.errors.ExitCode`:
0 ok, 1 some inputs unreadable, 2 usage or config error, 3 a gate failed, 4 the run failed). Nothing here
imports torch at module level, so ``--help`` answers instantly."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from xaicli import __version__
from xaicli.cli import bench as bench_command
from xaicli.cli import diff as diff_command
from xaicli.cli import evaluate as evaluate_command
from xaicli.cli import sweep as sweep_command
from xaicli.cli.errors import DebugOpt, mapped_errors
from xaicli.cli.options import (
    EXIT_CODES_HELP,
    ConfigOpt,
    DeviceOpt,
    InputsArg,
    JsonCommand,
    JsonOpt,
    JunitOpt,
    MarkdownOpt,
    OutdirOpt,
    QuietOpt,
)
from xaicli.naming import printable

app = typer.Typer(
    name="xaicli",
    help="Batch saliency maps (Grad-CAM family, pixel attributions, perturbation methods) for PyTorch "
         "image classifiers.\n\n"
         "Start with the bundled demo: [bold]xaicli explain sample_images -c configs/fashion_mnist.yaml "
         "-o out[/bold]",
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)

def _version(value: bool) -> None:
    if value:
        typer.echo(f"xaicli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Batch saliency maps for PyTorch image classifiers."""


@app.command(cls=JsonCommand, epilog="Examples:\n\n"
             "  xaicli explain sample_images -c configs/fashion_mnist.yaml -o out\n\n"
             "  xaicli explain photos/ cat.jpg -c my.yaml -o out -m gradcam -m scorecam -l layer4 -k 3\n\n"
             "  xaicli explain imgs -c my.yaml -o out --quiet --json > summary.json\n\n"
             "  xaicli explain golden/ -c ci.yaml -o out --junit reports/explain.xml --markdown summary.md; "
             "code=$?; cat summary.md >> \"$GITHUB_STEP_SUMMARY\"; exit $code\n\n"
             "(ci.yaml with `targets: {topk: 3, true_class: true}` and `output: {names: slot}`: maps of the "
             "labelled class and file names that do not change when a prediction does.)\n\n"
             + EXIT_CODES_HELP)
def explain(
    inputs: InputsArg,
    outdir: OutdirOpt,
    config: ConfigOpt = None,
    method: Annotated[list[str] | None, typer.Option(
        "--method", "-m",
        help="Method to run (repeatable); replaces the config's list. See `xaicli methods`.",
        show_default=False)] = None,
    layer: Annotated[list[str] | None, typer.Option(
        "--layer", "-l", help="Layer to explain (repeatable); replaces the config's layers. "
                              "See `xaicli layers`.", show_default=False)] = None,
    topk: Annotated[int | None, typer.Option(
        "--topk", "-k", min=1, help="Explain the top-K predicted classes.", show_default=False)] = None,
    device: DeviceOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", min=1, help="Images per batch.",
                                                   show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Redo everything. Without it, explanations already in OUTDIR/manifest.jsonl are "
                            "skipped (resume).")] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    figures: Annotated[bool, typer.Option("--figures", help="Also write per-class top-k figures "
                                          "(OUTDIR/figures/topk/<class>.png), as `figures: {topk: true}`.")
                       ] = False,
    junit: JunitOpt = None,
    markdown: MarkdownOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Explain images with the configured methods; write overlays, maps, manifest.jsonl and run.json."""
    from xaicli.timing import StageClock

    clock = StageClock.since_process_start()  # run.json's summary.stages: where the time goes
    with mapped_errors(outdir, debug, json_out):
        with clock.foreground("inputs"):
            from xaicli.cli.progress import make_progress
            from xaicli.config import apply_overrides, load_config
            from xaicli.runs.preflight import prepare_inputs

            cfg = load_config(config)  # before any torch import: config errors answer instantly
            apply_overrides(cfg, methods=method, layers=layer, topk=topk, device=device,
                            batch_size=batch_size)
            if figures:
                cfg.figures.topk = True
            progress = make_progress(quiet or json_out)
            names = [str(p) for p in inputs]
            items = prepare_inputs(names, outdir, progress.note)  # inputs and OUTDIR: still no torch
        with clock.foreground("import"):
            from xaicli.runs.explain import run_explain

        summary, code = run_explain(cfg, names, outdir, overwrite=overwrite, progress=progress, items=items,
                                    clock=clock)
        if summary is not None and (junit or markdown):  # None on the other ranks of a torchrun launch
            from xaicli.runs.ci_cases import explain_report

            explain_report(summary).write(junit, markdown)
    if summary is not None:  # rank 0 reports
        _report(summary, quiet, json_out)
    raise typer.Exit(int(code))


def _report(summary, quiet: bool, json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
        return
    if quiet and not summary.failures:
        return
    err = sys.stderr
    for path, msg in summary.failures:
        print(f"failed: {printable(path)}: {printable(msg)}", file=err)
    if not quiet:
        rate = summary.images_explained / summary.seconds if summary.seconds else 0.0
        accuracy = summary.accuracy.line()
        if accuracy:
            print(printable(accuracy), file=err)
        print(f"done: {summary.images_explained} explained, {summary.images_skipped} skipped (already done), "
              f"{len(summary.failures)} failed; {summary.rows_written} explanation(s) written to "
              f"{summary.outdir} in {summary.seconds:.1f}s ({rate:.1f} img/s on {summary.device})", file=err)


@app.command(epilog="Example:\n\n  xaicli layers -c configs/fashion_mnist.yaml")
def layers(
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    debug: DebugOpt = False,
) -> None:
    """List the model's modules with their output shapes and layouts, to pick layers for the CAM methods.

    The layout column says how a CAM method reads each output: NCHW feature maps, channels-last (NHWC)
    maps, or transformer tokens (class/register tokens dropped, patches on their grid).
    """
    with mapped_errors(None, debug, json_out):
        from xaicli.config import load_config

        cfg = load_config(config)  # before any torch import: config errors answer instantly
        from xaicli.runs.layers import list_layers

        listing = list_layers(cfg)
    if json_out:
        typer.echo(json.dumps(listing.to_dict(), indent=2))
        return
    shape, default, infos = listing.input_shape, listing.default_layer, listing.layers
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"layers for input {tuple(shape)} (default CAM layer: {default})",
                  caption="layout: how CAM methods read the output - NCHW (C, h, w), NHWC (h, w, C), "
                          "tokens p+hxw (p class/register tokens, then an h x w patch grid); "
                          "override with options.layer_layout / options.grid")
    longest = max((len(i.name) for i in infos), default=4) + 2  # names are never cut: they are typed back
    table.add_column("name", no_wrap=True, min_width=longest)
    for col in ("type", "output shape", "layout", "map (C, h, w)"):
        table.add_column(col)
    for i in infos:
        mark = " *" if i.name == default else ""
        table.add_row(i.name + mark, i.type, "x".join(map(str, i.shape)) if i.shape else "-",
                      i.layout.describe() if i.layout else "-",
                      "x".join(map(str, i.map_shape)) if i.map_shape else "-")
    Console(width=max(100, longest + 80, Console().width)).print(table)


@app.command(epilog="Use a method in a config as\n\n  methods:\n    - name: gradcam_pp\n"
             "      layers: \\[layer4]\n"  # \[ : a literal bracket, not Rich markup
             "      options: {alpha_norm: false}")
def methods(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the attribution methods, their papers and options."""
    from xaicli.runs.methods import method_catalog

    found = method_catalog()
    if json_out:
        typer.echo(json.dumps(found, indent=2, default=str))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="attribution methods", show_lines=True)
    for col in ("name", "family", "what it shows", "options (default)"):
        table.add_column(col, overflow="fold")
    for name, m in found.items():  # escaped: option help such as "[h, w]" is text, not Rich markup
        opts = "\n".join(f"{k}={o['default']!r}: {o['help']}" for k, o in m["options"].items()) or "-"
        table.add_row(name, m["family"] + (" (layer)" if m["needs_layer"] else ""),
                      f"{escape(m['summary'])}\n[dim]{escape(m['paper'])}[/dim]", escape(opts))
    Console(width=max(120, Console().width)).print(table)


@app.command(epilog="Use them with\n\n"
             "  xaicli evaluate IMAGES -c CONFIG -o OUT --metrics deletion,insertion,mprt\n\n"
             "or in a config:\n\n  evaluate:\n    metrics: \\[deletion, insertion]\n"
             "    options: {deletion: {steps: 50}}")
def metrics(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the evaluation metrics of `xaicli evaluate`, their papers and options."""
    from xaicli.runs.methods import metric_catalog

    found = metric_catalog()
    if json_out:
        typer.echo(json.dumps(found, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="evaluation metrics", show_lines=True)
    for col in ("name", "family", "what it measures", "options (default)"):
        table.add_column(col, overflow="fold")
    for name, m in found.items():
        opts = "\n".join(f"{k}={o['default']!r}: {o['help']}" for k, o in m["options"].items()) or "-"
        needs = " (masks)" if m["needs_masks"] else ""
        table.add_row(name, m["family"] + needs, f"{m['summary']}\n[dim]{m['paper']}[/dim]", opts)
    Console(width=max(120, Console().width)).print(table)


sweep_command.register(app)
diff_command.register(app)
evaluate_command.register(app)
bench_command.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
