"""The summary of an ``explain`` run: what the CLI prints, ``--json`` emits and run.json records.

Besides counts it keeps per-(method, layer) diagnostics of the maps written (:class:`MapStats`), from
which the end-of-run warnings come (:meth:`RunSummary.diagnose`): a method that gives mostly flat maps
(nothing to show: a wrong layer, a broken or random checkpoint look like this), integrated gradients
missing completeness by more than its ``tolerance``; images that have no known label although the true
class is explained. When labels are known it reports the top-1 accuracy and the confusion pairs
(:class:`~xaicli.runs.outcomes.Accuracy`), from every image of the run, resumed ones included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xaicli.errors import ExitCode
from xaicli.runs.outcomes import Accuracy, ImageOutcome

MOSTLY_FLAT = 0.5
"""Warn when more than this share of a (method, layer)'s maps are flat."""
UNLABELLED_SHOWN = 10
"""Images named in the warning about images without a label (all of them are in ``unlabelled_images``)."""


@dataclass
class MapStats:
    """Diagnostics of the maps of one (method, layer) written by a run."""

    maps: int = 0
    flat: int = 0
    over_tolerance: int = 0  # integrated gradients: completeness error above the method's tolerance
    worst_delta_rel: float = 0.0
    tolerance: float | None = None

    def add(self, flat: bool, delta_rel: float | None = None) -> None:
        self.maps += 1
        self.flat += bool(flat)
        if delta_rel is not None and self.tolerance is not None:
            self.over_tolerance += delta_rel > self.tolerance
            self.worst_delta_rel = max(self.worst_delta_rel, delta_rel)


@dataclass
class RunSummary:
    outdir: Path
    device: str
    images_total: int = 0
    images_explained: int = 0
    images_skipped: int = 0
    rows_written: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    oom_retries: int = 0
    map_stats: dict[str, MapStats] = field(default_factory=dict)  # "method @ layer" -> diagnostics
    warnings: list[str] = field(default_factory=list)
    outcomes: list[ImageOutcome] = field(default_factory=list)  # per image of the run (not in to_dict)
    unlabelled: list[str] = field(default_factory=list)  # rels without a label, when the true class is asked

    @property
    def accuracy(self) -> Accuracy:
        return Accuracy.of(self.outcomes)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.INPUTS_UNREADABLE if self.failures else ExitCode.OK

    @property
    def flat_maps(self) -> int:
        return sum(s.flat for s in self.map_stats.values())

    def stats(self, method: str, layer: str | None, tolerance: float | None = None) -> MapStats:
        key = f"{method} @ {layer}" if layer else method
        if key not in self.map_stats:
            self.map_stats[key] = MapStats(tolerance=tolerance)
        return self.map_stats[key]

    def diagnose(self) -> list[str]:
        """Warnings about the maps written (added to :attr:`warnings` and returned)."""
        found = []
        for key, s in self.map_stats.items():
            if s.maps and s.flat / s.maps > MOSTLY_FLAT:
                found.append(f"{key}: {s.flat} of {s.maps} maps are flat (nothing to show; drawn grey, "
                             "'flat': true in the manifest): check the layer (`xaicli sweep`) and the "
                             "checkpoint (random weights look like this)")
            if s.over_tolerance:
                found.append(f"{key}: {s.over_tolerance} of {s.maps} maps miss completeness by more than "
                             f"{s.tolerance:.0%} (worst {s.worst_delta_rel:.0%}, 'ig_delta_rel' in the "
                             "manifest): raise 'steps' or use 'steps: auto'")
        if self.unlabelled:
            shown = ", ".join(self.unlabelled[:UNLABELLED_SHOWN])
            more = f" and {len(self.unlabelled) - UNLABELLED_SHOWN} more" if len(
                self.unlabelled) > UNLABELLED_SHOWN else ""
            found.append(f"targets.true_class: {len(self.unlabelled)} image(s) have no known label (not in "
                         f"targets.labels, no class folder), so no 'true' map: {shown}{more}")
        self.warnings += [w for w in found if w not in self.warnings]
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "outdir": str(self.outdir), "device": self.device, "images_total": self.images_total,
            "images_explained": self.images_explained, "images_skipped": self.images_skipped,
            "images_failed": len(self.failures), "rows_written": self.rows_written,
            "failures": [{"image": p, "error": e} for p, e in self.failures],
            "seconds": round(self.seconds, 3), "images_per_second": round(
                self.images_explained / self.seconds, 2) if self.seconds else None,
            "timings": {k: round(v, 3) for k, v in self.timings.items()}, "oom_retries": self.oom_retries,
            "flat_maps": {k: s.flat for k, s in self.map_stats.items()},
            "warnings": list(self.warnings),
            **self.accuracy.to_dict(), "unlabelled": len(self.unlabelled),
            "unlabelled_images": list(self.unlabelled),
            "exit_code": int(self.exit_code),
        }
