"""Keep what figures need while a run streams batches past (used as ``run_explain(on_batch=...)``).

Per class, only the first ``per_class`` images in discovery order are kept, with their display image
(uint8) and maps, so memory is bounded by classes x ``per_class`` whatever the folder size. The class
of an image is its true label (the folder name, when it names a class, as the manifest's ``label``),
else its top-1 predicted class, else ``"unlabelled"`` (explicit class targets and no folder label).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from xaicli.engine.discover import InputImage
from xaicli.engine.run import BatchResult
from xaicli.outputs.layout import safe_name

UNLABELLED = "unlabelled"
MapKey = tuple[str, str | None]  # (method, layer)


def true_label(item: InputImage, classes: list[str]) -> str | None:
    """The class named by the image's folder (exactly or as its file-safe form), as in the manifest."""
    folder = item.folder_label
    if folder is None:
        return None
    return next((c for c in classes if folder in (c, safe_name(c))), None)


@dataclass
class Sample:
    """One image kept for figures."""

    index: int  # position in discovery order (figures show images in this order)
    item: InputImage
    group: str  # the class it is shown under
    label: str | None  # true class, if known
    image: np.ndarray  # (C, H, W) uint8
    targets: list[int]  # (K,) explained classes
    target_names: list[str]
    probs: list[float]  # (K,)
    maps: dict[MapKey, np.ndarray] = field(default_factory=dict)  # (K, H, W) float32


class FigureCollector:
    """Callable per :class:`~xaicli.engine.run.BatchResult`; see the module docstring.

    ``order`` maps each image path to its discovery index, so that a resumed run (which sees the
    remaining images first and re-explains skipped ones later) keeps the same images as a fresh run.
    ``groups`` optionally fixes the class of given paths (a caller that already grouped the images).
    """

    def __init__(self, per_class: int, order: Mapping[Path, int] | None = None,
                 groups: Mapping[Path, str] | None = None):
        self.per_class = per_class
        self.order = dict(order or {})
        self.fixed_groups = dict(groups or {})
        self.groups: dict[str, list[Sample]] = {}
        self.keys: list[MapKey] = []  # (method, layer) in the run's order
        self.slots: list[str] = []
        self.classes: list[str] = []
        self._signed: dict[MapKey, bool] = {}

    def wants(self, group: str, index: int) -> bool:
        kept = self.groups.get(group, [])
        return len(kept) < self.per_class or index < kept[-1].index

    def group_of(self, item: InputImage, targets: list[int]) -> tuple[str, str | None]:
        label = true_label(item, self.classes)
        if item.path in self.fixed_groups:
            return self.fixed_groups[item.path], label
        if label is not None:
            return label, label
        if self.slots and self.slots[0] == "top1":
            return self.classes[targets[0]], None
        return UNLABELLED, None

    def __call__(self, batch: BatchResult) -> None:
        self.classes = list(batch.classes) or self.classes
        self.slots = list(batch.slots)
        for key, m in batch.maps.items():
            if key not in self.keys:
                self.keys.append(key)
            self._signed[key] = self._signed.get(key, False) or bool((m < 0).any())
        targets = batch.targets.tolist()
        probs = batch.probs.tolist()
        for b, item in enumerate(batch.items):
            index = self.order.setdefault(item.path, len(self.order))
            group, label = self.group_of(item, targets[b])
            if not self.wants(group, index):
                continue
            image = (batch.images[b].float().clamp(0, 1) * 255).round().to(torch.uint8)
            sample = Sample(index, item, group, label, image.numpy(), targets[b],
                            [self.classes[t] for t in targets[b]], probs[b],
                            {k: m[b].float().numpy() for k, m in batch.maps.items()})
            kept = self.groups.setdefault(group, [])
            bisect.insort(kept, sample, key=lambda s: s.index)
            del kept[self.per_class:]

    def kept(self) -> set[Path]:
        return {s.item.path for samples in self.groups.values() for s in samples}

    def signed(self, key: MapKey) -> bool:
        """Whether a (method, layer) produced negative values (a signed method: diverging colours)."""
        return self._signed.get(key, False)

    def sorted_groups(self) -> list[tuple[str, list[Sample]]]:
        """Groups in class order (then any others alphabetically)."""
        rank = {c: i for i, c in enumerate(self.classes)}
        return sorted(self.groups.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))
