"""The ``xaicli`` command line. Each command parses, calls one library function, and maps errors:
exit 0 = all images explained, 1 = some inputs failed (each reported, the rest done), 2 = usage or
config error (nothing run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from xaicli import __version__
from xaicli.cli import bench as bench_command
from xaicli.cli import sweep as sweep_command
from xaicli.cli.options import ConfigOpt, DeviceOpt, InputsArg, JsonOpt, OutdirOpt, QuietOpt

app = typer.Typer(
    name="xaicli",
    help="Batch saliency maps (Grad-CAM family and pixel attributions) for PyTorch image classifiers.\n\n"
         "Start with the bundled demo: [bold]xaicli explain sample_images -c configs/fashion_mnist.yaml "
         "-o out[/bold]",
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


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


def _fail(message: str) -> NoReturn:
    message = "; ".join(ln.strip() for ln in str(message).splitlines() if ln.strip())  # always one line
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)



@app.command(epilog="Examples:\n\n"
             "  xaicli explain sample_images -c configs/fashion_mnist.yaml -o out\n\n"
             "  xaicli explain photos/ cat.jpg -c my.yaml -o out -m gradcam -m scorecam -l layer4 -k 3\n\n"
             "  xaicli explain imgs -c my.yaml -o out --quiet --json > summary.json\n\n"
             "Exit codes: 0 all images explained; 1 some inputs failed (listed, the rest done); "
             "2 usage or config error.")
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
) -> None:
    """Explain images with the configured methods; write overlays, maps, manifest.jsonl and run.json."""
    from xaicli.errors import UsageError

    try:
        from xaicli.config import load_config

        cfg = load_config(config)  # before any torch import: config errors answer instantly
        from xaicli.engine.plan import apply_overrides

        apply_overrides(cfg, method, layer)
        if topk is not None:
            cfg.targets.topk, cfg.targets.classes = topk, None
        if device is not None:
            cfg.run.device = device
        if batch_size is not None:
            cfg.run.batch_size = batch_size
        if figures:
            cfg.figures.topk = True
        from xaicli.cli.progress import make_progress
        from xaicli.engine.distributed import distributed_env

        if (dist_env := distributed_env()) is not None:  # launched by torchrun with several processes
            _explain_ranks(cfg, inputs, outdir, dist_env, overwrite, quiet, json_out)
        from xaicli.render.build import explain_with_figures

        summary = explain_with_figures(cfg, [str(p) for p in inputs], outdir, overwrite=overwrite,
                                       progress=make_progress(quiet or json_out))
    except UsageError as err:
        _fail(str(err))
    _report(summary, quiet, json_out)
    raise typer.Exit(summary.exit_code)


def _explain_ranks(cfg, inputs: list[Path], outdir: Path, env, overwrite: bool, quiet: bool,
                   json_out: bool) -> NoReturn:
    """One rank of a torchrun launch (see xaicli.engine.distributed): rank 0 reports, all exit alike."""
    from xaicli.cli.progress import make_progress
    from xaicli.engine.distributed import explain_distributed

    summary, code = explain_distributed(cfg, [str(p) for p in inputs], outdir, env, overwrite=overwrite,
                                        progress=make_progress(quiet or json_out or env.rank != 0))
    if summary is not None:
        if cfg.figures.topk or cfg.figures.compare:
            print("figures are not built by a multi-process run: run the same `xaicli explain` once more "
                  "in one process, it resumes over every explanation and builds them", file=sys.stderr)
        if cfg.figures.html:
            from xaicli.render.report import write_report

            write_report(outdir)
        _report(summary, quiet, json_out)
    raise typer.Exit(code)


def _report(summary, quiet: bool, json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
        return
    if quiet and not summary.failures:
        return
    err = sys.stderr
    for path, msg in summary.failures:
        print(f"failed: {path}: {msg}", file=err)
    if not quiet:
        rate = summary.images_explained / summary.seconds if summary.seconds else 0.0
        print(f"done: {summary.images_explained} explained, {summary.images_skipped} skipped (already done), "
              f"{len(summary.failures)} failed; {summary.rows_written} explanation(s) written to "
              f"{summary.outdir} in {summary.seconds:.1f}s ({rate:.1f} img/s on {summary.device})", file=err)


@app.command(epilog="Example:\n\n  xaicli layers -c configs/fashion_mnist.yaml")
def layers(
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the model's modules with their output shapes, to pick layers for the CAM methods."""
    from xaicli.errors import UsageError

    try:
        from xaicli.config import load_config
        from xaicli.models.layers import default_layer, describe_layers
        from xaicli.models.loader import load_model

        cfg = load_config(config)
        loaded = load_model(cfg)
        shape = loaded.input_shape
        infos = describe_layers(loaded.model, shape)
        default = loaded.default_layer or default_layer(loaded.model, shape)
    except UsageError as err:
        _fail(str(err))
    if json_out:
        rows = [{"name": i.name, "type": i.type, "output_shape": list(i.shape) if i.shape else None}
                for i in infos]
        typer.echo(json.dumps({"input_shape": list(shape), "default_layer": default, "layers": rows},
                              indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"layers for input {tuple(shape)} (default CAM layer: {default})")
    for col in ("name", "type", "output shape (C, H, W)"):
        table.add_column(col)
    for i in infos:
        mark = " *" if i.name == default else ""
        table.add_row(i.name + mark, i.type, "x".join(map(str, i.shape)) if i.shape else "-")
    Console(width=max(100, Console().width)).print(table)


@app.command(epilog="Use a method in a config as\n\n  methods:\n    - name: gradcam_pp\n"
             "      layers: \\[layer4]\n"  # \[ : a literal bracket, not Rich markup
             "      options: {alpha_norm: false}")
def methods(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the attribution methods, their papers and options."""
    from xaicli.methods import available_methods

    found = available_methods()
    if json_out:
        typer.echo(json.dumps({n: {"family": c.family, "summary": c.summary, "paper": c.paper,
                                   "needs_layer": c.requires_layer,
                                   "options": {k: {"default": o.default, "help": o.help,
                                                   "choices": list(o.choices) if o.choices else None}
                                               for k, o in c.options.items()}}
                               for n, c in found.items()}, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="attribution methods", show_lines=True)
    for col in ("name", "family", "what it shows", "options (default)"):
        table.add_column(col, overflow="fold")
    for name, cls in found.items():
        opts = "\n".join(f"{k}={o.default!r}: {o.help}" for k, o in cls.options.items()) or "-"
        table.add_row(name, cls.family + (" (layer)" if cls.requires_layer else ""),
                      f"{cls.summary}\n[dim]{cls.paper}[/dim]", opts)
    Console(width=max(120, Console().width)).print(table)


sweep_command.register(app)
bench_command.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
