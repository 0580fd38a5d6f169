"""xaicli's engine against pytorch-grad-cam and Captum on the same model and images (``xaicli bench``).

This package lives in the source checkout, outside the installed ``xaicli`` package: run it as
``python benchmarks/bench.py`` or ``xaicli bench`` (which forwards here from a checkout). Library use,
from the repository root::

    from benchmarks import BenchOptions, run_benchmark
    from benchmarks.report import as_text
    print(as_text(run_benchmark(BenchOptions(model="resnet18", size=224, methods=["gradcam"]))))

:mod:`benchmarks.rows` says which rows exist (one per registered method, plus the extra rows),
:mod:`benchmarks.suite` what is timed, :mod:`benchmarks.references` how the reference libraries are
called, :mod:`benchmarks.end_to_end` the end-to-end row, :mod:`benchmarks.cli` the command;
BENCHMARKS.md records the results. Importing this package does not import torch (``--help`` stays
instant): the names below load :mod:`benchmarks.suite` on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ALL_ROWS", "BenchOptions", "BenchReport", "Row", "run_benchmark"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from benchmarks import suite

        return getattr(suite, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
