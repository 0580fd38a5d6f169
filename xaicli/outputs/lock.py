"""One run at a time per OUTDIR: an exclusive ``flock`` on ``OUTDIR/.xaicli.lock``.

The lock is held by the open file, so it is released however the process ends (even ``kill -9``); the
file stays (removing it would let a process that opened the old file believe it holds the lock while
another one locks a new file). The holder writes its pid into it, which is what the refusal names:
``OUTDIR out is in use by pid 4242``. Where ``fcntl`` does not exist (Windows) there is no lock.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from xaicli.errors import UsageError
from xaicli.outputs.layout import LOCK_FILE

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]


class OutdirBusyError(UsageError):
    """Another xaicli run holds OUTDIR's lock."""


class OutdirLock:
    """``with OutdirLock(outdir):`` or :meth:`acquire` / :meth:`release`; OUTDIR must exist."""

    def __init__(self, outdir: Path):
        self.outdir = outdir
        self.path = outdir / LOCK_FILE
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self) -> None:
        """Take the lock or raise :class:`OutdirBusyError` naming the holder's pid (never waits)."""
        if self.held or fcntl is None:
            return
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as err:
            raise UsageError(f"cannot create the lock file {self.path}: {err.strerror or err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise OutdirBusyError(f"OUTDIR {self.outdir} is in use by pid {holder} (another xaicli run); "
                                  "wait for it to finish or use another -o") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if not self.held:
            return
        with contextlib.suppress(OSError):  # a full disk: the pid is only advice; the lock goes with the fd
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = -1

    def __enter__(self) -> OutdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
