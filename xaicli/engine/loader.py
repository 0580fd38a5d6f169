"""Batches of decoded images, prepared ahead of the model on a bounded thread pool.

Decoding (Pillow) and resizing (torch) release the GIL, so threads overlap with the model without
the start-up and pickling cost of worker processes. Memory stays flat whatever the folder size and
whatever the image sizes:

* at most ``prefetch`` batches are in flight (decoded at model-input size, a few MB each);
* large images are decoded reduced to about twice the model's input size (:mod:`.decode`);
* the decodes running at once share a byte budget (:class:`ByteBudget`, :data:`DECODE_BUDGET_BYTES`):
  a thread starts decoding only when its image's estimated peak fits next to the others; an image larger
  than the whole budget is decoded alone. Eight threads on eight 144-megapixel PNGs therefore hold about
  one image's pixels at a time, not eight.

Failures are returned, never raised.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from xaicli.engine.discover import InputImage
from xaicli.engine.preprocess import Preprocess
from xaicli.errors import ImageDecodeError

DECODE_BUDGET_BYTES = 768 << 20
"""Bytes the decode threads of one run may hold at once while decoding (estimates: decoded pixels twice
plus the float result, see :func:`xaicli.engine.decode.decode_bytes`)."""


class ByteBudget:
    """A counting semaphore in bytes, first come first served: :meth:`reserve` waits until ``nbytes``
    fit next to what is in use; a request larger than the whole budget waits until nothing else is in
    use and then runs alone."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_use = 0
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._serving or (self.in_use and self.in_use + nbytes > self.limit):
                self._cond.wait()
            self._serving += 1
            self.in_use += nbytes
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= nbytes
                self._cond.notify_all()


@dataclass
class Batch:
    items: list[InputImage]  # the images that decoded, in order
    images: Tensor | None  # (B, C, H, W) display images in [0, 1] (pinned when CUDA is used)
    failures: list[tuple[InputImage, str]]


def default_workers() -> int:
    """Decode threads: one per usable core up to 8; a single one on 1-2 cores, where a second thread
    would only take time from the model's compute threads."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    return 1 if cores <= 2 else min(8, cores)


def _load_one(pre: Preprocess, item: InputImage, budget: ByteBudget) -> Tensor | str:
    if item.problem is not None:
        return item.problem
    try:
        return pre.load(str(item.path), budget.reserve)
    except ImageDecodeError as err:
        return str(err)


def iter_batches(
    items: Sequence[InputImage], pre: Preprocess, batch_size: int, workers: int | None = None,
    pin_memory: bool = False, prefetch: int = 2,
) -> Iterator[Batch]:
    workers = default_workers() if workers in (None, 0) else workers
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    budget = ByteBudget(DECODE_BUDGET_BYTES)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xaicli-decode") as pool:
        pending: deque[tuple[list[InputImage], list[Future]]] = deque()
        next_chunk = 0

        def submit() -> None:
            nonlocal next_chunk
            chunk = list(chunks[next_chunk])
            pending.append((chunk, [pool.submit(_load_one, pre, it, budget) for it in chunk]))
            next_chunk += 1

        while next_chunk < len(chunks) and len(pending) < prefetch:
            submit()
        while pending:
            chunk, futures = pending.popleft()
            if next_chunk < len(chunks):
                submit()
            ok, tensors, failures = [], [], []
            for item, fut in zip(chunk, futures, strict=True):
                res = fut.result()
                if isinstance(res, str):
                    failures.append((item, res))
                else:
                    ok.append(item)
                    tensors.append(res)
            images = torch.stack(tensors) if tensors else None
            if images is not None and pin_memory:
                images = images.pin_memory()
            yield Batch(ok, images, failures)
