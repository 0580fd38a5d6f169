"""Ctrl-C and ``kill`` (SIGTERM) stop a run between commits, never inside one.

:func:`signals_as_interrupts` (installed by the CLI, which owns its process) turns SIGINT and SIGTERM into
:class:`Interrupted`, a ``KeyboardInterrupt`` that remembers its signal, so both take the same way out:
the current batch's files and rows are committed or not at all, ``run.json`` says ``interrupted``, and
the exit code is 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM), as shells report it.

:func:`uninterruptible` marks a commit (a batch's rows appended to the manifest): a signal that arrives
inside is held until the commit is complete, then raised. Without this a Ctrl-C inside a buffered write
could write a batch twice (the buffer flushed again on close), or half of it.

Signal handlers run in the main thread; commits happen in the main thread too. Library callers that do
not install the handlers get Python's default behaviour (Ctrl-C raises ``KeyboardInterrupt`` at once).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; :attr:`exit_code` is 128 + its number."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_depth = 0  # how many uninterruptible sections the main thread is in
_held: int | None = None  # the first signal that arrived inside one


def _handler(signum: int, _frame: object) -> None:
    global _held
    if _depth:
        if _held is None:
            _held = signum
        return
    raise Interrupted(signum)


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` (held inside :func:`uninterruptible` sections) while
    the block runs; the previous handlers are restored after it. Outside the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in HANDLED}
    for s in HANDLED:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def uninterruptible() -> Iterator[None]:
    """Hold SIGINT/SIGTERM (when :func:`signals_as_interrupts` is active) until the block is done, then
    raise :class:`Interrupted` for the first one that arrived. If the block itself raises, that error
    wins and a held signal is dropped (the run is failing anyway)."""
    global _depth, _held
    _depth += 1
    try:
        yield
    except BaseException:
        _depth -= 1
        if not _depth:
            _held = None
        raise
    _depth -= 1
    if not _depth and _held is not None:
        signum, _held = _held, None
        raise Interrupted(signum)
