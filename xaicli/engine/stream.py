"""The one streaming loop: image files (or tensors) through an :class:`~xaicli.engine.Explainer`.

Every command that explains images - ``explain``, the figure recompute after a resume, ``sweep`` (and
later ``evaluate``) - goes through :func:`explain_items`, so all of them get the same batching and the
same out-of-memory back-off (:mod:`xaicli.engine.batching`). Library users with tensors call
:func:`explain_images`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from torch import Tensor

from xaicli.engine.batching import OutOfMemoryAtMinimum, is_oom, release_memory
from xaicli.engine.discover import InputImage
from xaicli.engine.explainer import Explainer
from xaicli.engine.loader import iter_batches
from xaicli.engine.results import ExplainedBatch, Explanations

Note = Callable[[str], None]


def _ignore(_text: str) -> None:
    pass


def explain_images(explainer: Explainer, images: Tensor, note: Note = _ignore, *,
                   predict_only: bool = False, labels: Tensor | None = None) -> Explanations:
    """Explain (B, C, H, W) display images in [0, 1], ``explainer.batching.call_size`` images per call,
    halving sizes on out-of-memory errors (``note`` is told). Raises
    :class:`~xaicli.engine.batching.OutOfMemoryAtMinimum` when even one image does not fit.

    ``predict_only``: only the top-1 class and its probability (one plain forward pass, no maps).
    ``labels``: (B,) class indices, -1 where unknown, when the explainer explains the true class.
    """
    parts: list[Explanations] = []
    start, n = 0, images.shape[0]
    while start < n:
        size = min(explainer.batching.call_size, n - start)
        try:
            piece = images[start : start + size]
            if predict_only:
                parts.append(explainer.predict_batch(piece))
            elif labels is None:  # the one-argument call every explainer-like object answers
                parts.append(explainer.explain_batch(piece))
            else:
                parts.append(explainer.explain_batch(piece, labels[start : start + size]))
        except RuntimeError as err:  # torch.OutOfMemoryError is one
            if not is_oom(err):
                raise
            reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        else:
            start += size
            continue
        # outside the except block: the failed call's frames (and their tensors) are released
        release_memory(explainer.device)
        note(explainer.batching.shrink(size, reason))
    return Explanations.cat(parts)


def explain_items(explainer: Explainer, items: Sequence[InputImage], note: Note = _ignore, *,
                  predict_only: bool = False) -> Iterator[ExplainedBatch]:
    """Decode ``items`` ``batching.batch_size`` at a time (ahead of the model, on worker threads) and
    yield each batch explained. Unreadable images, and images that do not fit in memory even alone, come
    back as ``failures``; nothing is raised for them."""
    pin = explainer.device.type == "cuda"
    for batch in iter_batches(items, explainer.pre, explainer.batching.batch_size, explainer.cfg.run.workers,
                              pin_memory=pin):
        failures = list(batch.failures)
        if batch.images is None:
            yield ExplainedBatch([], None, None, failures)
            continue
        try:
            labels = explainer.labels.tensor(batch.items) if explainer.explains_true_class else None
            result = explain_images(explainer, batch.images, note, predict_only=predict_only, labels=labels)
        except OutOfMemoryAtMinimum as err:  # nothing left to halve: they fail, the run goes on
            yield ExplainedBatch([], None, None, failures + [(it, str(err)) for it in batch.items])
            continue
        yield ExplainedBatch(batch.items, batch.images, result, failures)
