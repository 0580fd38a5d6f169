"""Every size that splits the work of a run, owned in one place, and the out-of-memory back-off.

Three sizes, from the outside in:

``batch_size``
    images decoded per loader batch (``run.batch_size``): what is in flight between decoding and the
    model, so host memory stays flat whatever the folder size.
``call_size``
    images per :meth:`~xaicli.engine.Explainer.explain_batch` call. On CUDA it is ``batch_size`` (large
    batches keep the GPU busy). On the CPU it is a cache-sized micro-batch of about
    :data:`MICRO_BATCH_PIXELS` input pixels (16 images at 224x224, the whole batch for small inputs): a
    convolution network runs fastest when one call's activations stay in cache - at 224x224 on the
    2-core benchmark machine (1 MiB L2 per core, 32 MiB L3) a forward pass runs at ~114 images/s in
    calls of 16 images against ~88 in calls of 64 or 128.
``chunk_sizes``
    per method with an inner chunk (``chunked``: Score-CAM's masked inputs, integrated gradients' path
    points, SmoothGrad's noisy copies, the perturbation methods' perturbed inputs), model inputs per
    forward pass inside one call. The config's
    ``chunk_size`` option when given, else the method's default, lowered to the CPU micro-batch on the
    CPU. Passed to the method as an argument of each call.

Out of memory (``torch.OutOfMemoryError``, or a ``RuntimeError`` whose message says so, as some backends
raise): while a call holds more than one image, :meth:`Batching.shrink` halves ``call_size`` and the same
images are retried in pieces; at one image it halves every chunk size instead; when nothing is left to
halve the images of that call fail (the run goes on). The smaller sizes stick for the rest of the run.

None of these sizes changes a map: each image's maps are computed independently of the others in its
call, and every chunked method is exact (chunked == unchunked). Every retry is counted and reported
(``oom_retries`` in the summary, ``oom_backoff`` in run.json).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

MICRO_BATCH_PIXELS = 16 * 224 * 224


class OutOfMemoryAtMinimum(RuntimeError):
    """Out of memory with one image and every chunk size at 1: nothing left to halve."""


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def cpu_micro_batch(device: torch.device, size: tuple[int, int]) -> int | None:
    """Images per call on the CPU for inputs of ``size`` (H, W); None on other devices (no split)."""
    if device.type != "cpu":
        return None
    return max(MICRO_BATCH_PIXELS // max(1, size[0] * size[1]), torch.get_num_threads(), 1)


@dataclass
class Batching:
    """The sizes of one explainer (see the module docstring); mutable only through :meth:`shrink`."""

    batch_size: int
    call_size: int
    chunk_sizes: dict[str, int] = field(default_factory=dict)  # method name -> rows per forward pass
    micro_batch: int | None = None  # the CPU micro-batch, when one applies
    capped: dict[str, int] = field(default_factory=dict)  # chunk sizes lowered to the micro-batch
    retries: int = 0
    initial: dict[str, Any] = field(default_factory=dict)  # the sizes before any back-off

    @classmethod
    def plan(cls, batch_size: int, device: torch.device, size: tuple[int, int],
             methods: Sequence[tuple[str, Any, int | None]]) -> Batching:
        """Sizes for ``methods`` given as (name, method class, configured chunk_size or None)."""
        micro = cpu_micro_batch(device, size)
        batching = cls(batch_size=max(1, batch_size), call_size=max(1, min(batch_size, micro or batch_size)),
                       micro_batch=micro)
        for name, cls_, configured in methods:
            if not cls_.chunked:
                continue
            chunk = configured or cls_.default_chunk_size
            if configured is None and micro is not None and chunk > micro:
                chunk = batching.capped[name] = micro
            batching.chunk_sizes[name] = chunk
        batching.initial = {"call_size": batching.call_size, "chunk_sizes": dict(batching.chunk_sizes)}
        return batching

    def chunk_size(self, method: str) -> int | None:
        return self.chunk_sizes.get(method)

    def shrink(self, size: int, reason: str) -> str:
        """After an out-of-memory error on a call of ``size`` images: halve what can be halved; return
        the note to show. Raises :class:`OutOfMemoryAtMinimum` when nothing can."""
        self.retries += 1
        if size > 1:
            self.call_size = size // 2
            return (f"out of memory on {size} images ({reason}); retrying with {self.call_size} per call, "
                    "and using that size from now on")
        halved = {name: value // 2 for name, value in self.chunk_sizes.items() if value > 1}
        if not halved:
            raise OutOfMemoryAtMinimum(f"out of memory even for one image with every inner batch at 1 "
                                       f"({reason})")
        self.chunk_sizes.update(halved)
        return ("out of memory on one image (" + reason + "); retrying with "
                + ", ".join(f"{name}.chunk_size={value}" for name, value in halved.items()))

    def report(self) -> dict[str, Any]:
        """What run.json records under ``oom_backoff``: retries and the sizes in use at the end."""
        return {"retries": self.retries, "batch_size": self.batch_size, "call_size_in_use": self.call_size,
                "chunk_sizes_in_use": dict(self.chunk_sizes)}


def release_memory(device: torch.device) -> None:
    """Free what a failed call held before it is retried."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
