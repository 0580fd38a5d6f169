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
        weights=fv.VIT_WEIGHTS_PATH,
    )


def _canvas(variant: str) -> Callable[[], BuiltinModel]:
    def make() -> BuiltinModel:
        from xaicli.models import canvas

        honest = variant == "canvas_cnn"
        return BuiltinModel(
            factory=lambda: canvas.canvas_cnn(variant), classes=tuple(canvas.CLASSES), size=(64, 64),
            mode="L", mean=canvas.MEAN, std=canvas.STD,
            # the third block's activation (16x16): fine enough to point inside a 28x28 item
            default_layer="features.2.relu",
            description=("Fashion-MNIST items on a 64x64 cluttered canvas, 4 conv blocks"
                         + ("" if honest else "; trained with a class marker (a spurious 'Clever Hans' cue)")
                         + ", trained by `python -m xaicli.demo.train_canvas`"),
            weights=canvas.weights_path(variant),
        )

    return make


BUILTIN_MODELS: dict[str, Callable[[], BuiltinModel]] = {
    "fashion_mnist_cnn": _fashion_mnist,
    "fashion_mnist_vit": _fashion_mnist_vit,
    "canvas_cnn": _canvas("canvas_cnn"),
    "canvas_cnn_clever_hans": _canvas("canvas_cnn_clever_hans"),
}
