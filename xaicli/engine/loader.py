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
from xaicli.engine.threads import codec_thread_initializer, restore_intra_op, thread_budget
from xaicli.errors import ImageDecodeError
from xaicli.timing import NullClock, StageClock

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


def default_workers(device_type: str = "cpu") -> int:
    """Decode threads when ``run.workers`` is not set: the thread budget's (:mod:`.threads`) - a quarter of
    the cores on the CPU (1 on 2 cores: the model needs the rest), every core up to 8 with a GPU."""
    return thread_budget(device_type).decode


def _load_one(pre: Preprocess, item: InputImage, budget: ByteBudget, clock: StageClock) -> Tensor | str:
    if item.problem is not None:
        return item.problem
    try:
        return pre.load(str(item.path), budget.reserve, clock)
    except ImageDecodeError as err:
        return str(err)


def chunk_sizes(n: int, batch_size: int, ramp: int | None = None) -> list[int]:
    """How ``n`` images are split into loader batches: ``batch_size`` each, except that with ``ramp`` (the
    engine's call size) the first batch starts with a batch of ``ramp`` images and the last batch is split
    into batches of ``ramp``.

    The pipeline's fill and drain are serial - nothing is explained until the first batch is decoded, and
    the last batch's files are written after the model is done - so small batches there put the model to
    work sooner and finish sooner (256 JPEGs on 2 cores: ~0.5 s of a 5 s loop). The splits fall on the
    engine's call boundaries, so every image is computed in the same group of images as without them
    (bit-identical maps); no row or file depends on how images are batched."""
    batch_size = max(1, batch_size)
    batches = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    ramp = max(1, min(ramp or batch_size, batch_size))
    if ramp == batch_size or not batches:
        return batches

    def calls(size: int) -> list[int]:
        return [ramp] * (size // ramp) + ([size % ramp] if size % ramp else [])

    if len(batches) == 1:
        return calls(batches[0])
    first, *middle, last = batches
    head = [min(ramp, first)] + ([first - ramp] if first > ramp else [])
    return head + middle + calls(last)


def iter_batches(
    items: Sequence[InputImage], pre: Preprocess, batch_size: int, workers: int | None = None,
    pin_memory: bool = False, prefetch: int = 2, clock: StageClock | None = None, device_type: str = "cpu",
    ramp: int | None = None,
) -> Iterator[Batch]:
    """Decoded batches of ``items`` in order (sizes: :func:`chunk_sizes` with ``ramp``); ``workers`` decode
    threads (None or 0: the thread budget's for ``device_type``), at most ``prefetch`` batches ahead;
    ``clock`` records decoding and resizing."""
    clock = clock or NullClock()
    budget_threads = thread_budget(device_type, workers)  # intra_op: what restore_intra_op puts back
    chunks, start = [], 0
    for size in chunk_sizes(len(items), batch_size, ramp):
        chunks.append(items[start : start + size])
        start += size
    budget = ByteBudget(DECODE_BUDGET_BYTES)
    pool = ThreadPoolExecutor(max_workers=budget_threads.decode, thread_name_prefix="xaicli-decode",
                              initializer=codec_thread_initializer(clock))
    try:
        pending: deque[tuple[list[InputImage], list[Future]]] = deque()
        next_chunk = 0

        def submit() -> None:
            nonlocal next_chunk
            chunk = list(chunks[next_chunk])
            pending.append((chunk, [pool.submit(_load_one, pre, it, budget, clock) for it in chunk]))
            next_chunk += 1

        while next_chunk < len(chunks) and len(pending) < prefetch:
            submit()
        while pending:
            chunk, futures = pending.popleft()
            if next_chunk < len(chunks):
                submit()
            ok, tensors, failures = [], [], []
            with clock.foreground("wait_decode"):
                results = [fut.result() for fut in futures]
            for item, res in zip(chunk, results, strict=True):
                if isinstance(res, str):
                    failures.append((item, res))
                else:
                    ok.append(item)
                    tensors.append(res)
            images = torch.stack(tensors) if tensors else None
            if images is not None and pin_memory:
                images = images.pin_memory()
            yield Batch(ok, images, failures)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        restore_intra_op(budget_threads.intra_op)
