"""The summary of an ``explain`` run: what the CLI prints, ``--json`` emits and run.json records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xaicli.errors import ExitCode


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
    cpu_seconds: float = 0.0  # the process's CPU time, interpreter start included
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # StageClock.to_dict()

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.INPUTS_UNREADABLE if self.failures else ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "outdir": str(self.outdir), "device": self.device, "images_total": self.images_total,
            "images_explained": self.images_explained, "images_skipped": self.images_skipped,
            "images_failed": len(self.failures), "rows_written": self.rows_written,
            "failures": [{"image": p, "error": e} for p, e in self.failures],
            "seconds": round(self.seconds, 3), "images_per_second": round(
                self.images_explained / self.seconds, 2) if self.seconds else None,
            "timings": {k: round(v, 3) for k, v in self.timings.items()}, "oom_retries": self.oom_retries,
            "cpu_seconds": round(self.cpu_seconds, 3), "stages": self.stages,
            "exit_code": int(self.exit_code),
        }
