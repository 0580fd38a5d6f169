"""Progress reporting: a Rich bar (images/s, ETA) on a terminal, plain log lines otherwise (CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from xaicli.naming import printable


class PlainProgress:
    """One line every ``every`` seconds and at the end; nothing fancy, so CI logs stay readable."""

    def __init__(self, stream: TextIO | None = None, every: float = 5.0, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.every, self.clock = every, clock
        self.total = self.done = 0
        self.t0 = self.last = 0.0

    def start(self, total: int, description: str) -> None:
        self.total, self.done = total, 0
        self.t0 = self.last = self.clock()
        print(f"{description}: {total} image(s)", file=self.stream, flush=True)

    def advance(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0.0
            print(f"  {self.done}/{self.total} images  {rate:.1f} img/s  eta {eta:.0f}s", file=self.stream,
                  flush=True)

    def note(self, text: str) -> None:
        print(printable(text), file=self.stream, flush=True)

    def stop(self) -> None:
        pass


class RichProgress:
    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._progress = None
        self._task = None

    def start(self, total: int, description: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from xaicli.cli.rate_column import RateColumn

        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TaskProgressColumn(), RateColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        self._progress = Progress(*columns, console=self.console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def note(self, text: str) -> None:
        self.console.print(printable(text), markup=False, highlight=False)  # a path is text, not markup

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class QuietProgress(PlainProgress):
    def start(self, total: int, description: str) -> None: ...
    def advance(self, n: int) -> None: ...
    def note(self, text: str) -> None: ...


def make_progress(quiet: bool):
    if quiet:
        return QuietProgress()
    if sys.stderr.isatty():
        return RichProgress()
    return PlainProgress()
