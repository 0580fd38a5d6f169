"""``xaicli bench``: xaicli's engine against pytorch-grad-cam and Captum on the same model and images.

Library use::

    from xaicli.bench import BenchOptions, run_benchmark
    from xaicli.bench.report import as_text
    print(as_text(run_benchmark(BenchOptions(model="resnet18", size=224, methods=["gradcam"]))))

See :mod:`xaicli.bench.suite` for what is timed and :mod:`xaicli.bench.references` for how the reference
libraries are called; BENCHMARKS.md records the results.
"""

from xaicli.bench.suite import ALL_ROWS, BenchOptions, BenchReport, Row, run_benchmark

__all__ = ["ALL_ROWS", "BenchOptions", "BenchReport", "Row", "run_benchmark"]
