"""The thread budget of a run: the model's intra-op threads, the decode threads and the write threads,
sized together so that on a small machine the model is never starved and the codecs never wait.

The rule
--------
* **The model** keeps torch's intra-op threads (``torch.get_num_threads()``: by default one per physical
  core; this module never changes it). On the CPU the model is the largest consumer - Grad-CAM on
  ResNet-18 at 224x224 costs about 25 ms of CPU per image, decoding and resizing a 640x480 JPEG about
  7 ms, encoding an overlay and a map about 3 ms - so it gets every core.
* **Codec threads** (decode + resize, encode + write) run *between* the model's work on the same cores.
  They only have to keep pace with the model, and each extra thread on a busy core takes time from it
  (torch's OpenMP threads wait for the slowest of them at every parallel region). On the CPU: a quarter
  of the cores each for decoding and for writing, at least 1, at most 8 - 1 + 1 on 2 cores, 2 + 2 on 8.
  On a GPU the CPU has nothing else to do: decoding gets every core up to 8, writing half of them.
* **Codec threads run torch single-threaded** (:func:`codec_thread_initializer`): a resize on a decode
  thread would otherwise start its own team of intra-op threads next to the model's, and on 2 cores
  four busy threads fight for two cores.

``run.workers`` overrides the decode threads. The queues between the stages stay bounded as before: at
most ``prefetch`` decoded batches (:mod:`.loader`) and one batch of files being written
(:mod:`xaicli.runs.write`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from xaicli.timing import StageClock

MAX_CODEC_THREADS = 8


@dataclass(frozen=True)
class ThreadBudget:
    cores: int  # usable cores (CPU affinity)
    intra_op: int  # torch's intra-op threads (the model), as torch has them
    decode: int  # decode + resize threads
    write: int  # encode + write threads

    def to_dict(self) -> dict[str, int]:
        return {"cores": self.cores, "intra_op": self.intra_op, "decode": self.decode, "write": self.write}


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 2


def thread_budget(device_type: str = "cpu", decode: int | None = None, cores: int | None = None,
                  intra_op: int | None = None) -> ThreadBudget:
    """The budget for a run on ``device_type`` (see the module docstring); ``decode`` (``run.workers``,
    0 or None = the rule) overrides the decode threads."""
    import torch

    cores = cores or usable_cores()
    intra_op = intra_op or torch.get_num_threads()
    if device_type == "cpu":
        share = max(1, min(MAX_CODEC_THREADS, cores // 4))
        rule_decode, write = share, share
    else:
        rule_decode = max(1, min(MAX_CODEC_THREADS, cores))
        write = max(1, min(MAX_CODEC_THREADS, cores // 2))
    return ThreadBudget(cores, intra_op, decode or rule_decode, write)


def codec_thread_initializer(clock: StageClock | None = None) -> Callable[[], None]:
    """A thread-pool initializer for codec threads: torch ops on this thread run single-threaded (with
    OpenMP, ``torch.set_num_threads`` sets the calling thread's team size; the model's thread keeps its
    own, and :func:`restore_intra_op` puts the default for new threads back), and ``clock`` leaves the
    thread's CPU time out of the foreground stages."""

    def init() -> None:
        import torch

        torch.set_num_threads(1)
        if clock is not None:
            clock.register_codec_thread()

    return init


def restore_intra_op(threads: int) -> None:
    """Re-assert the calling (model) thread's intra-op threads, and the default for threads started from
    now on, after codec threads set theirs to 1."""
    import torch

    torch.set_num_threads(threads)
