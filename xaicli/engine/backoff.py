"""Out-of-memory back-off: a batch that does not fit is halved and retried, never a crashed run.

:class:`OOMBackoff` wraps the per-batch explain call of the run loop. On ``torch.OutOfMemoryError`` (or a
``RuntimeError`` whose message says "out of memory", as some backends raise):

1. while more than one image is in the call, the call size is halved and the same images are retried
   in pieces; the reduced size is kept for every later batch (the loader still decodes full batches;
   they are explained in pieces);
2. at one image, the methods' inner chunk options (Score-CAM ``batch_size``, integrated gradients'
   and SmoothGrad's ``internal_batch_size``, also of a SmoothGrad ``base``) are halved instead, again
   for the rest of the run;
3. when nothing is left to halve, the images of that call are reported as failed (exit code 1) and the
   run goes on.

Results do not depend on these sizes: each image's maps are computed independently of the others in its
batch, and the methods' chunking is exact (chunked == unchunked). Every retry is counted
(``oom_retries`` in the summary and run.json) and announced through ``note``.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

#: Method options that size an inner chunk of model inputs; halved after an OOM at one image.
CHUNK_OPTIONS = ("batch_size", "internal_batch_size")


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class OutOfMemoryAtMinimum(RuntimeError):
    """Out of memory with one image and every inner chunk at 1: nothing left to halve."""


def merge_results(parts: list[tuple]) -> tuple:
    """Concatenate explain results (targets, probs, maps, extras) along the batch dimension."""
    if len(parts) == 1:
        return parts[0]
    targets, probs, maps, extras = zip(*parts, strict=True)
    return (torch.cat(targets), torch.cat(probs), {k: torch.cat([m[k] for m in maps]) for k in maps[0]},
            {k: torch.cat([e[k] for e in extras]) for k in extras[0]})


class OOMBackoff:
    """Calls ``explain`` on at most ``limit`` images at a time, shrinking sizes on out-of-memory errors."""

    def __init__(self, explain: Callable[[Tensor], tuple], limit: int, methods: Sequence[Any] = (),
                 note: Callable[[str], None] | None = None, device: torch.device | None = None):
        self.explain = explain
        self.limit = max(1, limit)
        self.initial_limit = self.limit
        self.methods = list(methods)  # method instances whose CHUNK_OPTIONS may be halved
        self.note = note or (lambda _text: None)
        self.device = device
        self.retries = 0

    def __call__(self, images: Tensor) -> tuple:
        """Explain ``images`` (B, C, H, W); raises :class:`OutOfMemoryAtMinimum` when nothing fits."""
        parts: list[tuple] = []
        start, n = 0, images.shape[0]
        while start < n:
            size = min(self.limit, n - start)
            try:
                result = self.explain(images[start : start + size])
            except (torch.OutOfMemoryError, RuntimeError) as err:
                if not is_oom(err):
                    raise
                reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
            else:
                parts.append(result)
                start += size
                continue
            # outside the except block: the failed call's frames (and their tensors) are released
            self._release_memory()
            self.retries += 1
            self._shrink(size, reason)
        return merge_results(parts)

    def _release_memory(self) -> None:
        gc.collect()
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _shrink(self, size: int, reason: str) -> None:
        if size > 1:
            self.limit = size // 2
            self.note(f"out of memory on {size} images ({reason}); retrying with {self.limit} per call, "
                      "and using that size from now on")
            return
        halved = []
        for owner, name in self._chunk_owners():
            value = owner.opts[name]
            if isinstance(value, int) and value > 1:
                owner.opts = {**owner.opts, name: value // 2}  # a new dict: run.json keeps the configured one
                halved.append(f"{getattr(owner, 'name', type(owner).__name__)}.{name}={value // 2}")
        if not halved:
            raise OutOfMemoryAtMinimum(f"out of memory even for one image with every inner batch at 1 "
                                       f"({reason})")
        self.note(f"out of memory on one image ({reason}); retrying with " + ", ".join(halved))

    def _chunk_owners(self) -> list[tuple[Any, str]]:
        owners = []
        for method in self.methods:
            for m in (method, getattr(method, "base", None)):
                if m is not None and isinstance(getattr(m, "opts", None), dict):
                    owners += [(m, name) for name in CHUNK_OPTIONS if name in m.opts]
        return owners

    def report(self) -> dict[str, Any]:
        """What run.json records: retries, the call size in use and the inner chunk sizes in use."""
        chunks = {f"{getattr(o, 'name', type(o).__name__)}.{n}": o.opts[n] for o, n in self._chunk_owners()}
        return {"retries": self.retries, "batch_size": self.initial_limit, "batch_size_in_use": self.limit,
                "inner_chunks_in_use": chunks}
