"""The benchmark command over :func:`benchmarks.run_benchmark`: ``python benchmarks/bench.py`` runs it,
and ``xaicli bench`` forwards its arguments here from a source checkout (:mod:`xaicli.cli.bench`).

No torch import at module level (nor in :mod:`benchmarks.rows`), so ``--help`` answers instantly: the
help names the extra rows and refers to ``xaicli methods`` for the method rows, since listing the
registry's methods would import torch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from benchmarks.rows import EXTRA_ROWS, METRIC_ROWS

ROWS_HELP = ("Rows to run (repeatable or comma-separated): any attribution method (one row per method "
             "`xaicli methods` lists), " + ", ".join(EXTRA_ROWS) + "; the metric rows "
             + ", ".join(METRIC_ROWS) + " (against the RISE authors' loop, Quantus and pytorch-grad-cam's "
             "ROAD). Default: the methods and " + ", ".join(EXTRA_ROWS) + ".")


def bench(
    model: Annotated[str, typer.Option(help="torchvision architecture (random weights), or the bundled "
                                       "fashion_mnist_cnn (its own 28x28 input).")] = "resnet18",
    size: Annotated[int, typer.Option(min=8, help="Input size (square).")] = 224,
    vit_model: Annotated[str, typer.Option(help="torchvision vision transformer for the attention rows "
                                           "and gradcam_vit (random weights, 224x224).")] = "vit_b_16",
    batch: Annotated[int, typer.Option(min=1, help="Images per call, for both libraries.")] = 32,
    images: Annotated[int, typer.Option(min=1, help="Images per timed repeat (fast rows).")] = 64,
    heavy_images: Annotated[int, typer.Option(min=1, help="Images per timed repeat for the other chunked "
                                              "methods (integrated gradients, SmoothGrad, GradientSHAP, "
                                              "Ablation-CAM).")] = 4,
    scorecam_images: Annotated[int, typer.Option(min=1, help="Images per timed repeat for Score-CAM.")] = 2,
    perturbation_images: Annotated[int, typer.Option(
        min=1, help="Images per timed repeat for the perturbation methods (occlusion, RISE, LIME...).")] = 2,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats per row (median reported).")] = 5,
    heavy_repeats: Annotated[int, typer.Option(min=1, help="Timed repeats for the heavy rows (the chunked "
                                               "methods).")] = 3,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
    precision: Annotated[str, typer.Option(help="xaicli's run.precision: fp32, bf16, fp16 (CUDA).")] = "fp32",
    methods: Annotated[list[str] | None, typer.Option("--methods", "-m", help=ROWS_HELP,
                                                      show_default=False)] = None,
    e2e_images: Annotated[list[int] | None, typer.Option(
        min=0, help="JPEGs in the end-to-end rows, one pair of rows per size (repeatable; 0: none). "
                    "Default: 256 and 1024.", show_default=False)] = None,
    e2e_repeats: Annotated[int, typer.Option(min=1, help="Runs of each end-to-end process.")] = 3,
    workdir: Annotated[Path | None, typer.Option(
        help="Folder for the end-to-end JPEGs and outputs (default: a temporary folder).",
        show_default=False)] = None,
    user_script: Annotated[Path | None, typer.Option(
        help="The pytorch-grad-cam user script (default: benchmarks/pgc_user_script.py).",
        show_default=False)] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Few images and repeats: a smoke run.")] = False,
    markdown: Annotated[Path | None, typer.Option(help="Also write the table as Markdown here.",
                                                  show_default=False)] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write all numbers as JSON here.",
                                                   show_default=False)] = None,
) -> None:
    """Time xaicli against pytorch-grad-cam and Captum (when installed) and print the table."""
    from benchmarks import BenchOptions, run_benchmark
    from benchmarks.report import as_json, as_markdown, as_text
    from xaicli.errors import UsageError

    rows = [r.strip() for m in methods or [] for r in m.split(",") if r.strip()] or None
    opts = BenchOptions(model=model, size=size, batch=batch, images=images, heavy_images=heavy_images,
                        scorecam_images=scorecam_images, perturbation_images=perturbation_images,
                        repeats=repeats, heavy_repeats=heavy_repeats,
                        device=device, precision=precision, methods=rows,
                        e2e_images=(256, 1024) if e2e_images is None else tuple(e2e_images),
                        e2e_repeats=e2e_repeats, workdir=workdir, user_script=user_script,
                        vit_model=vit_model)
    if quick:
        opts = opts.quick()
    try:
        report = run_benchmark(opts, log=lambda line: print(line, file=sys.stderr, flush=True))
    except UsageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(as_text(report))
    if markdown is not None:
        markdown.write_text(as_markdown(report) + "\n", encoding="utf-8")
    if json_path is not None:
        json_path.write_text(as_json(report) + "\n", encoding="utf-8")


EPILOG = ("Examples (`python benchmarks/bench.py` takes the same arguments):\n\n  xaicli bench\n\n"
          "  xaicli bench --quick\n\n"
          "  xaicli bench -m gradcam -m e2e --markdown table.md\n\n"
          "  xaicli bench -m deletion -m road -m mprt --model fashion_mnist_cnn\n\n"
          "  xaicli bench --device cuda --model resnet50 --batch 128 --images 1024 --precision bf16")

app = typer.Typer(add_completion=False, rich_markup_mode="rich",
                  context_settings={"help_option_names": ["-h", "--help"]})
app.command(epilog=EPILOG)(bench)


def main(args: Sequence[str] | None = None, prog_name: str | None = None) -> None:
    """Run the command on ``args`` (default: ``sys.argv[1:]``); exits like any command line (SystemExit)."""
    typer.main.get_command(app).main(args=None if args is None else list(args), prog_name=prog_name)
