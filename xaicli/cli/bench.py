"""``xaicli bench``: a thin entry that runs the benchmark harness of a source checkout.

The harness (the ``benchmarks`` package at the repository root: :mod:`benchmarks.cli`) is not part of the
installed package. This command finds it next to the ``xaicli`` package directory - which is where it is
in a checkout, installed editable or not - and forwards every argument to it, ``--help`` included, so its
options are documented in one place. Installed from a wheel there is no checkout: one line, exit 2.
No torch import here (nor in :mod:`benchmarks.cli` at import), so ``--help`` answers instantly.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer

NOT_FOUND = ("xaicli bench runs from a source checkout (benchmarks/ not found next to the xaicli package); "
             "clone the repository and run it there")


def benchmarks_folder() -> Path:
    """Where a checkout keeps the harness: ``benchmarks/`` next to the ``xaicli`` package directory."""
    import xaicli

    return Path(xaicli.__file__).resolve().parents[1] / "benchmarks"


def _harness(folder: Path):
    """Import :mod:`benchmarks.cli` from ``folder``; None when ``folder`` holds no harness (or another
    ``benchmarks`` package was imported instead)."""
    if not (folder / "__init__.py").is_file() or not (folder / "cli.py").is_file():
        return None
    root = str(folder.parent)
    if root not in sys.path[:1]:
        sys.path.insert(0, root)  # before the working directory, which may hold another benchmarks/
    module = importlib.import_module("benchmarks.cli")
    if Path(module.__file__).resolve().parent != folder.resolve():
        return None
    return module


def bench(ctx: typer.Context) -> None:
    """Time xaicli against pytorch-grad-cam and Captum and print the table (from a source checkout)."""
    harness = _harness(benchmarks_folder())
    if harness is None:
        typer.echo(f"error: {NOT_FOUND}", err=True)
        raise typer.Exit(2)
    harness.main(ctx.args, prog_name=ctx.command_path)


def register(app: typer.Typer) -> None:
    """Add the command to the ``xaicli`` app."""
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                add_help_option=False)(bench)
