"""``xaicli sweep``: one CAM method at many layers, as figures (see :mod:`xaicli.runs.sweep`).

Thin: parse, call :func:`xaicli.runs.sweep.run_sweep`, let :mod:`xaicli.cli.errors` map errors to exit
codes. No torch import at module level, so ``--help`` is instant.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from xaicli.cli.errors import DebugOpt, mapped_errors
from xaicli.cli.options import (
    EXIT_CODES_HELP,
    ConfigOpt,
    DeviceOpt,
    InputsArg,
    JsonCommand,
    JsonOpt,
    OutdirOpt,
    QuietOpt,
)
from xaicli.naming import printable

EPILOG = ("Examples:\n\n"
          "  xaicli sweep sample_images -c configs/fashion_mnist.yaml -o out --layers auto\n\n"
          "  xaicli sweep photos/ -c resnet.yaml -o out --layers layer3,layer4 -m gradcam_pp -n 4\n\n"
          "  xaicli sweep sample_images -c configs/fashion_mnist.yaml -o out --metric insertion\n\n"
          "--metric scores every layer with a faithfulness metric (deletion, insertion, road_morf, "
          "road_lerf; "
          "options from the config's evaluate.options), prints the table, writes the scores under the row "
          "labels and names the most faithful layer.\n\n"
          "--layers auto picks, for every feature block, the map before the activation (conv/BN output) and "
          "after it, in forward order (on the bundled model: features.{0,1,2}.bn and .relu).\n\n"
          "Writes OUTDIR/sweep/<class>.png (rows = layers, columns = images), OUTDIR/sweep/summary.png and "
          "OUTDIR/index.html. " + EXIT_CODES_HELP)


def sweep(
    inputs: InputsArg,
    outdir: OutdirOpt,
    config: ConfigOpt = None,
    layers: Annotated[str, typer.Option(
        "--layers", "-l", help="'auto' (pre- and post-activation map of every block) or a comma-separated "
                               "list of layer names.")] = "auto",
    method: Annotated[str, typer.Option("--method", "-m", help="A CAM method (see `xaicli methods`).")
                      ] = "gradcam",
    images_per_class: Annotated[int | None, typer.Option(
        "--images-per-class", "-n", min=1, help="Images per class (default: figures.images_per_class).",
        show_default=False)] = None,
    metric: Annotated[str | None, typer.Option(
        "--metric",
        help="Score every layer with this faithfulness metric (e.g. insertion) and name the best.",
        show_default=False)] = None,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Explain the same images at many layers; write one layer-sweep figure per class."""
    with mapped_errors(outdir, debug, json_out):
        from xaicli.cli.progress import make_progress
        from xaicli.config import apply_overrides, load_config
        from xaicli.runs.sweep import run_sweep

        cfg = load_config(config)
        apply_overrides(cfg, device=device)
        summary = run_sweep(cfg, [str(p) for p in inputs], outdir, layers=layers, method=method,
                            images_per_class=images_per_class, metric=metric,
                            progress=make_progress(quiet or json_out))
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        for path, msg in summary.failures:
            print(f"failed: {printable(path)}: {printable(msg)}", file=sys.stderr)
        if summary.scores is not None and not quiet:
            _print_scores(summary.scores.to_dict())
        if not quiet:
            print(f"done: {summary.images} image(s) at {len(summary.layers)} layer(s) "
                  f"({', '.join(c.name for c in summary.layers)}); {len(summary.figures)} figure(s) in "
                  f"{outdir / 'sweep'} in {summary.seconds:.1f}s"
                  + (f"; report: {summary.report}" if summary.report else ""), file=sys.stderr)
    raise typer.Exit(int(summary.exit_code))


def _print_scores(scores: dict) -> None:
    """The layer table of ``--metric``: one line per layer, the best one marked."""
    direction = "higher" if scores["higher_is_better"] else "lower"
    print(f"{scores['name']} per layer ({direction} is better):", file=sys.stderr)
    for row in scores["layers"]:
        value = "undefined" if row["mean"] is None else f"{row['mean']:.4f} ± {row['std']:.4f}"
        mark = "  <- most faithful" if row["layer"] == scores["best"] else ""
        print(f"  {row['layer']:<32} {value}  (n={row['n']}){mark}", file=sys.stderr)
    if scores["best"]:
        print(f"most faithful layer by {scores['name']}: {scores['best']}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add the command to the ``xaicli`` app."""
    app.command(cls=JsonCommand, epilog=EPILOG)(sweep)
