"""Where a run's time goes: wall-clock and CPU seconds per stage, recorded from any thread.

A run has two kinds of stages:

* **foreground** stages run on the calling (main) thread: start-up steps, the engine, colouring the
  overlays, appending manifest rows. Their CPU time is the *process's* CPU time during the stage minus
  what the codec threads used meanwhile, so it includes torch's intra-op threads (which Python cannot
  time one by one) and nothing of the decode and write threads running at the same time.
* **worker** stages run on the codec threads (decoding, resizing, encoding, writing files). Their CPU
  time is the calling thread's own (``time.thread_time``); codec threads are registered
  (:meth:`StageClock.register_codec_thread`) so that the foreground stages can leave them out.

The stages overlap in wall-clock time (decoding and writing run while the engine computes), so their wall
times add up to more than the run's; their CPU times add up to the process's CPU time over the loop. On a
machine with few cores the CPU column is the one that says where the time goes.

Reading another thread's CPU clock needs ``time.pthread_getcpuclockid`` (Linux, most Unixes); elsewhere a
foreground stage counts the main thread's CPU time only (torch's intra-op threads are then left out).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

STAGES: dict[str, str] = {
    # start-up, in order
    "start": "interpreter start and the CLI's imports, before xaicli's command code runs",
    "inputs": "reading the config, finding the images, checking OUTDIR",
    "import": "importing torch and the engine",
    "model": "building the model and loading its weights",
    "probe": "the one probe forward pass (output size, layer shapes, gradient check, batch-norm pairs)",
    "plan": "creating the methods and checking their layers",
    "fold": "folding batch norms into convolutions (one verification forward pass)",
    "prepare": "moving the model to its device and layout",
    "identity": "model digest, fingerprints, and the resume check against OUTDIR's manifest",
    # the loop
    "wait_decode": "the model's thread waiting for decoded images (the codecs are behind)",
    "decode": "reading and decoding image files into float pixels (codec threads)",
    "resize": "resizing decoded images to the model's input (codec threads)",
    "engine": "explaining: normalisation, the methods' forward and backward passes",
    "colour": "colouring and blending overlays (on the model's device)",
    "encode": "encoding overlays (PNG/JPEG/WebP) and maps (.npy) (codec threads)",
    "write": "writing files atomically (codec threads)",
    "wait_write": "the model's thread waiting for the previous batch's files (the writers are behind)",
    "manifest": "appending manifest rows",
}
"""Every stage a run records, with what it covers (the keys of run.json's ``summary.stages``)."""

STARTUP = ("start", "inputs", "import", "model", "probe", "plan", "fold", "prepare", "identity")
LOOP = ("wait_decode", "decode", "resize", "engine", "colour", "encode", "write", "wait_write", "manifest")


@dataclass
class StageTime:
    wall: float = 0.0
    cpu: float = 0.0
    calls: int = 0


def _thread_cpu(ident: int) -> float | None:
    """CPU seconds of the live thread ``ident`` (a ``threading`` ident), None when unreadable."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (AttributeError, OSError, ValueError, OverflowError):
        return None


class StageClock:
    """Wall and CPU seconds per stage (see the module docstring). Thread-safe; cheap enough to wrap
    every batch and every file (a few microseconds per stage)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stages: dict[str, StageTime] = {}
        self._codec_threads: dict[int, float] = {}  # ident -> CPU seconds at its last reading
        self._exact = hasattr(time, "pthread_getcpuclockid")

    @classmethod
    def since_process_start(cls) -> StageClock:
        """A clock whose ``start`` stage holds the process's life so far: the interpreter's start and the
        imports before the command ran (wall time from the process's start time on Linux, else 0)."""
        clock = cls()
        clock.add("start", _process_age() or 0.0, time.process_time())
        return clock

    # --- recording ------------------------------------------------------------------------------------

    def add(self, stage: str, wall: float, cpu: float, calls: int = 1) -> None:
        with self._lock:
            t = self._stages.setdefault(stage, StageTime())
            t.wall += wall
            t.cpu += cpu
            t.calls += calls

    def register_codec_thread(self) -> None:
        """Called on a codec thread (a pool initializer): its CPU time is left out of foreground stages."""
        ident = threading.get_ident()
        with self._lock:
            self._codec_threads[ident] = _thread_cpu(ident) or 0.0

    def _foreground_cpu(self) -> float:
        """The process's CPU seconds minus those of the registered codec threads."""
        if not self._exact:
            return time.thread_time()
        total = time.process_time()
        with self._lock:
            for ident in list(self._codec_threads):
                cpu = _thread_cpu(ident)
                if cpu is None:  # the thread ended: its last reading stands
                    cpu = self._codec_threads[ident]
                self._codec_threads[ident] = cpu
                total -= cpu
        return total

    @contextmanager
    def foreground(self, stage: str) -> Iterator[None]:
        """Time a stage of the calling (main) thread, torch's intra-op threads included."""
        w0, c0 = time.perf_counter(), self._foreground_cpu()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - w0, self._foreground_cpu() - c0)

    @contextmanager
    def worker(self, stage: str) -> Iterator[None]:
        """Time a stage of a codec thread (its own CPU time)."""
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - w0, time.thread_time() - c0)

    # --- reading --------------------------------------------------------------------------------------

    def stage(self, name: str) -> StageTime:
        with self._lock:
            t = self._stages.get(name, StageTime())
            return StageTime(t.wall, t.cpu, t.calls)

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{stage: {"wall_s", "cpu_s", "calls"}}`` in :data:`STAGES` order (run.json's
        ``summary.stages``)."""
        with self._lock:
            order = [s for s in STAGES if s in self._stages] + [s for s in self._stages if s not in STAGES]
            return {s: {"wall_s": round(self._stages[s].wall, 4), "cpu_s": round(self._stages[s].cpu, 4),
                        "calls": self._stages[s].calls} for s in order}


class NullClock(StageClock):
    """A clock that records nothing (library calls that do not ask for timings)."""

    def add(self, stage: str, wall: float, cpu: float, calls: int = 1) -> None:
        pass

    def register_codec_thread(self) -> None:
        pass

    @contextmanager
    def foreground(self, stage: str) -> Iterator[None]:
        yield

    @contextmanager
    def worker(self, stage: str) -> Iterator[None]:
        yield


def _process_age() -> float | None:
    """Wall seconds since this process started (Linux: /proc), None elsewhere."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
