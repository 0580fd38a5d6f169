"""Models that ship with xaicli, by name. Each entry knows its classes, preprocessing and default layer,
so ``source: builtin`` configs need nothing else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn


@dataclass(frozen=True)
class BuiltinModel:
    factory: Callable[[], nn.Module]
    classes: tuple[str, ...]
    size: tuple[int, int]
    mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_layer: str
    description: str
    weights: Path | None = None  # the shipped weights file the factory loads (hashed for fingerprints)


def _fashion_mnist() -> BuiltinModel:
    from xaicli.models import fashion_mnist as fm

    return BuiltinModel(
        factory=fm.fashion_mnist_cnn, classes=tuple(fm.CLASSES), size=(28, 28), mode="L",
        mean=tuple(fm.MEAN), std=tuple(fm.STD),
        # seed 000: the second conv block's feature map after batch-norm, before the activation
        default_layer="features.1.bn",
        description="Fashion-MNIST CNN (3 conv blocks), trained by `python -m xaicli.demo.train`",
        weights=fm.WEIGHTS_PATH,
    )


def _fashion_mnist_vit() -> BuiltinModel:
    from xaicli.models import fashion_mnist_vit as fv

    return BuiltinModel(
        factory=fv.fashion_mnist_vit, classes=tuple(fv.CLASSES), size=(28, 28), mode="L",
        mean=tuple(fv.MEAN), std=tuple(fv.STD),
        # pytorch-grad-cam's recommendation for ViTs: the last block's first norm (see models.layers)
        default_layer="blocks.3.norm1",
        description="Fashion-MNIST ViT (4 blocks, 4x4 patches), trained by "
                    "`python -m xaicli.demo.train --model fashion_mnist_vit`",
    )


BUILTIN_MODELS: dict[str, Callable[[], BuiltinModel]] = {
    "fashion_mnist_cnn": _fashion_mnist,
    "fashion_mnist_vit": _fashion_mnist_vit,
}
