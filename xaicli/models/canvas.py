"""The localisation demo models: a small CNN that finds a Fashion-MNIST item on a 64x64 canvas.

Two sets of weights ship for the same architecture, both trained by ``python -m xaicli.demo.train_canvas``
on the canvases of :mod:`xaicli.demo.canvas_data`:

* ``canvas_cnn``: trained with an uninformative marker - right for the right reasons, its Grad-CAM
  points at the item;
* ``canvas_cnn_clever_hans``: trained with a marker that encodes the label - just as accurate on such
  canvases, but for the wrong reason: its evidence is the marker in the top band, outside the object.

``xaicli evaluate --masks`` with the pointing game tells them apart (README, "Right for the right
reasons"). Layer names follow the Fashion-MNIST demo: ``features.<i>.{conv,bn,relu,pool}``; the last
block keeps the 8x8 resolution.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from xaicli.models.fashion_mnist import CLASSES, ConvBlock

__all__ = ["CLASSES", "MEAN", "STD", "VARIANTS", "CanvasCNN", "canvas_cnn", "weights_path"]

MEAN: tuple[float, ...] = (0.0691,)
"""Mean pixel of the training canvases (in [0, 1]); the statistics are recorded by the trainer."""

STD: tuple[float, ...] = (0.2061,)

VARIANTS = ("canvas_cnn", "canvas_cnn_clever_hans")
WEIGHTS_DIR = Path(__file__).parent / "weights"


def weights_path(variant: str) -> Path:
    return WEIGHTS_DIR / f"{variant}.pt"


class CanvasCNN(nn.Module):
    """Four conv blocks (64 -> 32 -> 16 -> 8 -> 8), global average pooling, a linear classifier.

    Global average pooling keeps the logits a linear function of the last block's channel means, so the
    class evidence has to be *somewhere* on the 8x8 grid - which is what Grad-CAM shows.
    """

    def __init__(self, num_classes: int = len(CLASSES), dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBlock(1, 16),  # 64 -> 32
            ConvBlock(16, 32),  # 32 -> 16
            ConvBlock(32, 64),  # 16 -> 8
            ConvBlock(64, 64, pool=False),  # 8 -> 8
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def canvas_cnn(variant: str = "canvas_cnn", pretrained: bool = True) -> CanvasCNN:
    """One of the shipped variants in eval mode (weights loaded with ``weights_only=True``)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    model = CanvasCNN()
    if pretrained:
        path = weights_path(variant)
        if not path.is_file():
            raise FileNotFoundError(f"weights not found at {path}; create them with "
                                    "`python -m xaicli.demo.train_canvas`")
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
