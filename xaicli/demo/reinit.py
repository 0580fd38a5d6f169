"""Write a checkpoint of a builtin model with some of its layers re-initialised: a deliberately changed
model for trying ``xaicli diff`` gates (the README's CI section, docs/ci.md and the tests use it).

Usage::

    python -m xaicli.demo.reinit --model fashion_mnist_cnn --layers features.2 -o changed.pt

Every module at or below the named layers gets its ``reset_parameters()`` (PyTorch's own initialisation)
under ``--seed``, batch-norm running statistics included, so the result is the same on every machine. The
file is a plain ``state_dict`` that ``model.checkpoint`` in a config loads.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from xaicli.models.builtin import BUILTIN_MODELS


def reinitialised_state(model_name: str, layers: Sequence[str], seed: int = 0) -> dict[str, torch.Tensor]:
    """The builtin model's state dict with ``layers`` (module names; their submodules too) re-initialised."""
    model = BUILTIN_MODELS[model_name]().factory()
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise SystemExit(f"unknown layer(s) {unknown}; modules include {list(modules)[1:12]}")
    torch.manual_seed(seed)
    for name in layers:
        for sub in modules[name].modules():
            for reset in ("reset_parameters", "reset_running_stats"):
                if hasattr(sub, reset):
                    getattr(sub, reset)()
    return model.state_dict()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fashion_mnist_cnn", choices=sorted(BUILTIN_MODELS))
    parser.add_argument("--layers", nargs="+", default=["features.2"],
                        help="modules to re-initialise (default: the last conv block)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reinitialised_state(args.model, args.layers, args.seed), args.out)
    print(f"wrote {args.out}: {args.model} with {', '.join(args.layers)} re-initialised (seed {args.seed})")


if __name__ == "__main__":
    main()
