"""Typed results of the engine: what a batch of explanations is, independent of where it goes next.

Sinks (the files + manifest writer, the figure collector, later metric collectors) all read these types,
so none of them rebuilds a result by hand or parses strings back into numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from xaicli.engine.discover import InputImage

MapKey = tuple[str, str | None]
"""(method, layer) of one map; layer ``None`` for methods that explain the input itself."""


@dataclass(frozen=True)
class Slot:
    """Which target of an image a map explains: the k-th predicted class, a fixed class or the image's
    labelled (true) class.

    ``kind`` "top": ``index`` is the rank (1 = predicted class); "class": ``index`` is the class index;
    "true": the image's label (``index`` unused, 0), which differs per image and does not move with the
    model. Its :attr:`name` ("top1", "class7", "true") is what the manifest and output file names carry.
    """

    kind: Literal["top", "class", "true"]
    index: int = 0

    @property
    def name(self) -> str:
        return "true" if self.kind == "true" else f"{self.kind}{self.index}"

    @property
    def rank(self) -> int | None:
        """The prediction rank for top-k slots, else None."""
        return self.index if self.kind == "top" else None

    def label(self, classes: list[str]) -> str:
        """For people: 'top-2', 'class Sneaker'."""
        if self.kind == "top":
            return f"top-{self.index}"
        if self.kind == "true":
            return "true class"
        return f"class {classes[self.index]}" if 0 <= self.index < len(classes) else self.name

    @classmethod
    def parse(cls, name: str) -> Slot:
        """The slot of a manifest's ``slot`` field ("top1", "class7", "true")."""
        if name == "true":
            return cls("true")
        for kind in ("top", "class"):
            if name.startswith(kind) and name[len(kind):].isdigit():
                return cls(kind, int(name[len(kind):]))  # type: ignore[arg-type]
        raise ValueError(f"not a slot name: {name!r}")


@dataclass
class Explanations:
    """Every map of a batch of images, as one :meth:`~xaicli.engine.Explainer.explain_batch` returns it.

    targets (B, K) class indices; probs (B, K) softmax probability of each target; maps
    {(method, layer): (B, K, H, W) float32}; extras {(method, name): (B, K)} per-map diagnostics
    (e.g. integrated gradients' completeness gap); predicted (B,) the top-1 class of each image (None
    when not computed). On the explainer's device.
    """

    targets: Tensor
    probs: Tensor
    maps: dict[MapKey, Tensor] = field(default_factory=dict)
    extras: dict[tuple[str, str], Tensor] = field(default_factory=dict)
    predicted: Tensor | None = None

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @classmethod
    def cat(cls, parts: list[Explanations]) -> Explanations:
        """Concatenate along the batch dimension (pieces of one batch, in order)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        predicted = (torch.cat([p.predicted for p in parts])
                     if all(p.predicted is not None for p in parts) else None)
        return cls(torch.cat([p.targets for p in parts]), torch.cat([p.probs for p in parts]),
                   {k: torch.cat([p.maps[k] for p in parts]) for k in first.maps},
                   {k: torch.cat([p.extras[k] for p in parts]) for k in first.extras}, predicted)

    def cpu(self) -> Explanations:
        return Explanations(self.targets.cpu(), self.probs.cpu(), {k: v.cpu() for k, v in self.maps.items()},
                            {k: v.cpu() for k, v in self.extras.items()},
                            None if self.predicted is None else self.predicted.cpu())


def flat_maps(maps: Tensor, images: Tensor | None = None) -> Tensor:
    """(B, K) bool: which of the (B, K, H, W) maps are *flat* - constant, so there is nothing to show.

    The methods' normalisation already turns flat and nearly flat maps into all zeros
    (:func:`xaicli.methods.postprocess.normalise_map`), so a constant map is the signal. A map of a
    constant image (every pixel the same, per channel: an all-black frame) is flat as well: whatever
    structure it has comes from the model's padding, not from the image. ``images``: (B, C, H, W).
    """
    flat = maps.flatten(2)
    out = flat.amax(-1) == flat.amin(-1)
    if images is not None:
        pixels = images.flatten(2)
        blank = (pixels.amax(-1) == pixels.amin(-1)).all(dim=1)  # (B,)
        out = out | blank.to(out.device)[:, None]
    return out


@dataclass
class ExplainedBatch:
    """One batch as it leaves :func:`~xaicli.engine.stream.explain_items`.

    ``items``/``images``/``result``: the images that were explained, their display images (B, C, H, W)
    in [0, 1] (exactly what the model saw, before normalisation; on the CPU) and their explanations (on
    the device); empty/None when none was. ``failures``: the images that could not be read or explained,
    with a one-line reason each.
    """

    items: list[InputImage]
    images: Tensor | None
    result: Explanations | None
    failures: list[tuple[InputImage, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Images this batch accounts for (explained + failed): the progress step."""
        return len(self.items) + len(self.failures)
