"""A small CNN for Fashion-MNIST that ships with trained weights.

The model exists so that ``xaicli`` can be demonstrated and tested end to end without downloading
anything: the weights (a few hundred KB) live next to this file and the matching sample images live in
``sample_images/``. Both are produced by ``python -m xaicli.demo.train``.

The architecture is deliberately plain and Keras-like so that the layer names are easy to pass to
``--layer`` on the command line::

    features.0.conv  features.0.bn  features.0.relu  features.0.pool   # 28x28 -> 14x14
    features.1.conv  features.1.bn  features.1.relu  features.1.pool   # 14x14 -> 7x7
    features.2.conv  features.2.bn  features.2.relu  features.2.pool   # 7x7 (pool is Identity)
    pool  flatten  classifier.0 (Dropout)  classifier.1 (Linear)

Every block has the same four submodules, so ``features.<i>.bn`` is always the pre-activation
(post-BatchNorm, pre-ReLU) response of block ``i`` and ``features.<i>.relu`` the post-activation one.
``features.1.bn`` - the second block's pre-activation map, 14x14 - is the layer the Grad-CAM study this
project started from (seed 000) picked after sweeping all six conv/bn candidates: the builtin default.
The last block keeps its 7x7 resolution (its ``pool`` is an ``nn.Identity``) so ``features.2`` - the
usual Grad-CAM target layer - yields 7x7 maps rather than a coarse 3x3 grid.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = [
    "CLASSES",
    "MEAN",
    "STD",
    "WEIGHTS_PATH",
    "ConvBlock",
    "FashionMNISTCNN",
    "fashion_mnist_cnn",
]

CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Fashion-MNIST class names, indexed by label."""

MEAN: tuple[float, ...] = (0.2860,)
"""Per-channel mean of the training images (pixels scaled to [0, 1]) used for normalisation."""

STD: tuple[float, ...] = (0.3530,)
"""Per-channel standard deviation of the training images used for normalisation."""

WEIGHTS_PATH: Path = Path(__file__).parent / "weights" / "fashion_mnist_cnn.pt"
"""Location of the shipped ``state_dict`` (float32), written by ``python -m xaicli.demo.train``."""


class ConvBlock(nn.Module):
    """``conv -> bn -> relu -> pool``, each stored under a fixed attribute name.

    The convolution is 3x3 with padding 1 (spatial size preserved) and no bias, because the following
    BatchNorm has its own shift. ``pool`` is a 2x2 max-pool that halves the resolution, or an
    ``nn.Identity`` when ``pool=False``; keeping the attribute in both cases gives every block the same
    layer names, so hooks can address ``features.<i>.pool`` uniformly.
    """

    def __init__(self, in_channels: int, out_channels: int, pool: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool: nn.Module = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class FashionMNISTCNN(nn.Module):
    """Three conv blocks, global average pooling and a linear classifier.

    Input: normalised grayscale images of shape ``(B, 1, 28, 28)`` (see :data:`MEAN` / :data:`STD`).
    Output: logits of shape ``(B, 10)`` in the order of :data:`CLASSES`.

    Global average pooling (rather than flattening the 7x7 maps) makes the logits a linear function of
    the channel means of ``features.2``, which is exactly the setting in which CAM and Grad-CAM coincide;
    it also keeps the model tiny (~95k parameters).
    """

    def __init__(self, num_classes: int = len(CLASSES), dropout: float = 0.3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBlock(1, 32),  # 28x28 -> 14x14
            ConvBlock(32, 64),  # 14x14 -> 7x7
            ConvBlock(64, 128, pool=False),  # 7x7 -> 7x7: the Grad-CAM target resolution
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def fashion_mnist_cnn(pretrained: bool = True) -> FashionMNISTCNN:
    """Build the demo model in eval mode, loading the shipped weights when ``pretrained``.

    The weights are loaded with ``weights_only=True`` (plain tensors, no pickled code).
    """
    model = FashionMNISTCNN()
    if pretrained:
        if not WEIGHTS_PATH.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST weights not found at {WEIGHTS_PATH}; "
                "create them with `python -m xaicli.demo.train`."
            )
        state_dict = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
        model.load_state_dict(state_dict)
    return model.eval()
