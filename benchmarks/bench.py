"""xaicli vs pytorch-grad-cam and Captum: the same code as ``xaicli bench`` (see BENCHMARKS.md).

    python benchmarks/bench.py                    # the full CPU table (about 10 minutes on 2 cores)
    python benchmarks/bench.py --quick            # a smoke run
    python benchmarks/bench.py --device cuda --model resnet50 --batch 128 --images 1024
"""

from xaicli.cli.bench import main

if __name__ == "__main__":
    main()
