"""``xaicli bench``: a thin command over :func:`xaicli.bench.run_benchmark` (no torch import here)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

ROWS_HELP = ("Rows to run (repeatable or comma-separated): gradcam, gradcam_pp, scorecam, saliency, "
             "guided_backprop, deconvnet, guided_gradcam, integrated_gradients, smoothgrad, forward, topk, "
             "e2e. Default: all.")


def bench(
    model: Annotated[str, typer.Option(help="torchvision architecture (random weights).")] = "resnet18",
    size: Annotated[int, typer.Option(min=8, help="Input size (square).")] = 224,
    batch: Annotated[int, typer.Option(min=1, help="Images per call, for both libraries.")] = 32,
    images: Annotated[int, typer.Option(min=1, help="Images per timed repeat (fast rows).")] = 64,
    heavy_images: Annotated[int, typer.Option(min=1, help="Images per timed repeat for integrated gradients "
                                              "and SmoothGrad.")] = 4,
    scorecam_images: Annotated[int, typer.Option(min=1, help="Images per timed repeat for Score-CAM.")] = 2,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats per row (median reported).")] = 5,
    heavy_repeats: Annotated[int, typer.Option(min=1, help="Timed repeats for the heavy rows.")] = 3,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
    precision: Annotated[str, typer.Option(help="xaicli's run.precision: fp32, bf16, fp16 (CUDA).")] = "fp32",
    methods: Annotated[list[str] | None, typer.Option("--methods", "-m", help=ROWS_HELP,
                                                      show_default=False)] = None,
    e2e_images: Annotated[int, typer.Option(min=0, help="JPEGs in the end-to-end row (0: skip it).")] = 256,
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
    from xaicli.bench import BenchOptions, run_benchmark
    from xaicli.bench.report import as_json, as_markdown, as_text
    from xaicli.errors import UsageError

    rows = [r.strip() for m in methods or [] for r in m.split(",") if r.strip()] or None
    opts = BenchOptions(model=model, size=size, batch=batch, images=images, heavy_images=heavy_images,
                        scorecam_images=scorecam_images, repeats=repeats, heavy_repeats=heavy_repeats,
                        device=device, precision=precision, methods=rows, e2e_images=e2e_images,
                        e2e_repeats=e2e_repeats, workdir=workdir, user_script=user_script)
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


def main() -> None:
    """Entry point of ``benchmarks/bench.py``: the same command as ``xaicli bench``."""
    typer.run(bench)


EPILOG = ("Examples:\n\n  xaicli bench\n\n  xaicli bench --quick\n\n"
          "  xaicli bench -m gradcam -m e2e --markdown table.md\n\n"
          "  xaicli bench --device cuda --model resnet50 --batch 128 --images 1024 --precision bf16")


def register(app: typer.Typer) -> None:
    """Add the command to the ``xaicli`` app."""
    app.command(epilog=EPILOG)(bench)
