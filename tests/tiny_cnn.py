"""A tiny seeded CNN for figure, sweep and report tests (loaded through ``model.source: python``).

Two conv blocks (``features.{0,1}.{conv,bn,relu,pool}``, the second without pooling), global average
pooling and a linear head over three classes, for 16x16 RGB inputs. Helpers write a matching config
and a class-folder image tree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

CLASSES = ["cat", "dog", "T-shirt/top"]  # a name with '/' checks file-safe naming
FOLDERS = ["cat", "dog", "T-shirt_top"]


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, pool: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.pool: nn.Module = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(Block(3, 6), Block(6, 8, pool=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def make() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


def write_config(path: Path, **figures) -> Path:
    """A YAML config for the tiny model; ``figures`` entries go into its ``figures:`` section."""
    import yaml

    cfg = {
        "model": {"source": "python", "factory": f"{Path(__file__).resolve()}:make", "classes": CLASSES},
        "preprocess": {"size": [16, 16], "mode": "RGB", "mean": [0.5], "std": [0.25]},
        "methods": [{"name": "gradcam", "layers": ["features.1.bn"]}],
        "targets": {"topk": 2},
        "output": {"overlay_scale": 2},
        "run": {"device": "cpu", "batch_size": 4, "workers": 1},
    }
    if figures:
        cfg["figures"] = figures
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def write_images(root: Path, per_class: int = 3, folders: list[str] | None = None, seed: int = 0) -> Path:
    """``root/<folder>/img_<i>.png`` random 16x16 RGB images; returns ``root``."""
    rng = np.random.default_rng(seed)
    for folder in folders or FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"img_{i}.png")
    return root
