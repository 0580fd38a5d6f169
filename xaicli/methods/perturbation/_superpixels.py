"""The superpixel methods (feature ablation, LIME, Kernel SHAP): coalitions in, one value per superpixel out.

Each image is cut into M superpixels (:mod:`._segments`). A *coalition* ``z`` in {0, 1}^M says which
superpixels a perturbed input keeps (1) and which it fills (0); its keep mask is ``z[segment of
pixel]``. A method supplies only

* :meth:`SuperpixelMethod.coalitions`: the (P, M) coalitions for an image with M superpixels (drawn
  from the seed and M alone, so every image with M superpixels gets the same ones), and
* :meth:`SuperpixelMethod.fit`: one value per superpixel and target from the coalitions and the scores
  of their perturbed inputs,

and the values are painted on their superpixels. A coalition drawn several times (frequent with few
superpixels, and for Kernel SHAP's many size-1 and size-(M-1) draws) is run once and enters the fit
with its multiplicity as a weight: the same least-squares problem as one row per draw, for fewer
forward passes. The rows of a batch are image-major (every distinct coalition of image 0, then of
image 1, ...), run ``chunk_size`` at a time across image boundaries; the segment map
goes out with the maps (``Explanation.segments``) so overlays can draw the superpixel boundaries, and
the number of superpixels of each image goes to the manifest (``superpixels``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xaicli.errors import ConfigError
from xaicli.methods.base import Call, InputRange, Option
from xaicli.methods.input_space import display_images
from xaicli.methods.perturbation._base import PERTURBATION_OPTIONS, PerturbationMethod, RawMaps
from xaicli.methods.perturbation._segments import SEGMENTATIONS, segment, slic_available

SUPERPIXEL_OPTIONS: dict[str, Option] = {
    "segments": Option("slic", "superpixels: slic (scikit-image SLIC on the display image) or grid (a "
                       "regular grid)", choices=SEGMENTATIONS),
    "n_segments": Option(50, "about how many superpixels per image", minimum=1),
    "compactness": Option(10.0, "SLIC's balance of colour against position (higher: more square "
                          "superpixels)", minimum=0.0),
    "slic_sigma": Option(1.0, "Gaussian smoothing (pixels) of the image before SLIC", minimum=0.0),
    **PERTURBATION_OPTIONS,
}


class SuperpixelMethod(PerturbationMethod):
    """Base of the methods whose features are superpixels; see the module docstring."""

    options = SUPERPIXEL_OPTIONS

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any], key: str = "options") -> dict[str, Any]:
        opts = super().resolve_options(given, key)
        if opts["compactness"] <= 0:
            raise ConfigError(f"{key}.compactness", f"must be > 0, got {opts['compactness']}")
        if opts["segments"] == "slic" and not slic_available():
            raise ConfigError(f"{key}.segments", "slic needs scikit-image (pip install scikit-image); "
                              "or use segments: grid")
        return opts

    def superpixels(self, x: Tensor, input_range: InputRange | None = None) -> tuple[Tensor, list[int]]:
        """Superpixel labels (B, H, W) of normalised inputs ``x`` and the count of each image, computed on
        the display images (``input_range`` maps ``x`` back to raw [0, 1])."""
        return segment(display_images(x, input_range), self.opts["segments"], self.opts["n_segments"],
                       self.opts["compactness"], self.opts["slic_sigma"])

    @abstractmethod
    def coalitions(self, m: int) -> Tensor:
        """(P, m) float coalitions for an image with ``m`` superpixels, on the CPU."""

    @abstractmethod
    def fit(self, z: Tensor, counts: Tensor, y: Tensor, clean: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Values (m, K) of the superpixels from the distinct coalitions ``z`` (U, m), how often each was
        drawn (U,), their scores ``y`` (U, K) and the clean scores (K,), all float64; plus per-target
        diagnostics {name: (K,)} for the manifest."""

    def distinct_coalitions(self, m: int) -> tuple[Tensor, Tensor]:
        """:meth:`coalitions` without repeats: (U, m) distinct rows (sorted) and their multiplicities (U,)."""
        return torch.unique(self.coalitions(m), dim=0, return_counts=True)

    def attribute(self, x: Tensor, fill: Tensor, tgt: Tensor, clean: Tensor, call: Call) -> RawMaps:
        b, _, h, w = x.shape
        dev = x.device
        labels, counts = self.superpixels(x, call.input_range)  # (B, H, W), [M_b]
        drawn: dict[int, tuple[Tensor, Tensor]] = {}  # they depend only on M: draw once per distinct M
        for m in counts:
            if m not in drawn:
                drawn[m] = tuple(t.to(dev) for t in self.distinct_coalitions(m))
        per_image = [drawn[m][0] for m in counts]  # (U_b, M_b) each
        widest = max(counts)
        table = torch.cat([F.pad(z, (0, widest - z.shape[1])) for z in per_image])  # (R, M_max)
        sizes = [z.shape[0] for z in per_image]
        rows = torch.repeat_interleave(torch.arange(b, device=dev),
                                       torch.tensor(sizes, device=dev))  # (R,) image of each row
        flat_labels = labels.flatten(1)  # (B, H*W)

        def keep(start: int, stop: int) -> Tensor:
            img = rows[start:stop]
            return table[start:stop].gather(1, flat_labels[img]).view(-1, 1, h, w)  # (n, 1, H, W)

        scores = torch.empty((rows.shape[0], tgt.shape[1]), device=dev)  # (R, K)
        for start, stop, _, s in self.perturbed_scores(x, fill, rows, keep, tgt, call.chunk_size):
            scores[start:stop] = s
        dtype = torch.float32 if dev.type == "mps" else torch.float64  # MPS has no float64
        maps = torch.empty((b, tgt.shape[1], h, w), device=dev)
        extras: dict[str, list[Tensor]] = {}
        for i, (m, y) in enumerate(zip(counts, scores.split(sizes), strict=True)):
            z, multiplicity = drawn[m]
            values, diagnostics = self.fit(z.to(dtype), multiplicity.to(dtype), y.to(dtype),
                                           clean[i].to(dtype))  # (M_b, K)
            maps[i] = values.T.float()[:, flat_labels[i]].view(-1, h, w)
            for name, v in diagnostics.items():
                extras.setdefault(name, []).append(v.float())
        out = {name: torch.stack(v) for name, v in extras.items()}  # (B, K) each
        out["superpixels"] = torch.tensor(counts, device=dev, dtype=torch.float32)[:, None].expand_as(clean)
        return RawMaps(maps, out, labels.to(torch.int32))
