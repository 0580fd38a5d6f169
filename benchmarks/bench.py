"""xaicli vs pytorch-grad-cam and Captum: the same command as ``xaicli bench`` (see BENCHMARKS.md).

    python benchmarks/bench.py                    # the full CPU table (about 10 minutes on 2 cores)
    python benchmarks/bench.py --quick            # a smoke run
    python benchmarks/bench.py --device cuda --model resnet50 --batch 128 --images 1024

Runs from any working directory: the repository root (this file's parent's parent) is put first on
``sys.path`` so that ``benchmarks`` (and, without an install, ``xaicli``) import from this checkout.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    # the script's own folder is sys.path[0]: replace it, so its modules (cli, report, ...) are not
    # importable as top-level names that could shadow others
    if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "benchmarks":
        del sys.path[0]
    sys.path.insert(0, str(ROOT))

    from benchmarks.cli import main

    main()
