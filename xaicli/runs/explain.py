"""``xaicli explain``: find the images, check OUTDIR, lock it, build one explainer, stream the images
through it into the sinks.

The order is the cheapest failure first: inputs and OUTDIR are checked before the model loads
(:mod:`.preflight`), OUTDIR is locked before anything is written into it (:mod:`xaicli.outputs.lock`),
and the rows already there are checked against this run's identity before anything is explained
(:class:`~.write.ExplanationWriter`). The sinks are the files + manifest writer and, when figures are asked
for, the figure collector (:mod:`.figures`); the HTML report is refreshed at the end (:mod:`.report`).
Under ``torchrun`` with several processes, :mod:`.distributed` runs :func:`explain_shard` once per rank
and merges.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from xaicli.config import Config
from xaicli.engine import Explainer, explain_items
from xaicli.engine.discover import InputImage
from xaicli.errors import ExitCode
from xaicli.methods.gradient.integrated_gradients import CompletenessWarning
from xaicli.models.loader import LoadedModel
from xaicli.outputs.layout import MANIFEST, RUN_JSON
from xaicli.outputs.lock import OutdirLock
from xaicli.runs.figures import FigureCollector, recompute_skipped, write_figures
from xaicli.runs.identity import run_identity
from xaicli.runs.preflight import prepare_inputs
from xaicli.runs.progress import NullProgress, ProgressSink
from xaicli.runs.report import write_report
from xaicli.runs.summary import RunSummary
from xaicli.runs.write import ExplanationWriter
from xaicli.timing import StageClock


def run_explain(cfg: Config, inputs: Sequence[str], outdir: Path, *, overwrite: bool = False,
                progress: ProgressSink | None = None, items: Sequence[InputImage] | None = None,
                clock: StageClock | None = None) -> tuple[RunSummary | None, ExitCode]:
    """The whole ``xaicli explain`` command: :func:`explain` in one process, or this rank's part of a
    ``torchrun`` launch (:mod:`.distributed`; only rank 0 reports, the summary is None on the others).
    ``items``: the inputs already found and OUTDIR already checked (:func:`.preflight.prepare_inputs`);
    ``clock``: the command's stage clock (:mod:`xaicli.timing`; the CLI's holds its start-up)."""
    from xaicli.runs.distributed import distributed_env, explain_distributed

    env = distributed_env()
    if env is None:
        summary = explain(cfg, inputs, outdir, overwrite=overwrite, progress=progress, items=items,
                          clock=clock)
        return summary, summary.exit_code
    return explain_distributed(cfg, inputs, outdir, env, overwrite=overwrite,
                               progress=progress if env.rank == 0 else None)


def command_explainer(cfg: Config, loaded: LoadedModel | None = None, *, fold_batchnorms: bool = True,
                      clock: StageClock | None = None) -> Explainer:
    """The explainer of a command, which owns its model: batch norms folded (unless asked not to), the
    functional-ReLU patch on, planning warnings kept for the run to report (not printed by Python), its
    start-up and loop timed on ``clock`` (a new :class:`~xaicli.timing.StageClock` if none: run.json's
    ``summary.stages``)."""
    return Explainer(cfg, loaded, fold_batchnorms=fold_batchnorms, functional_relu=True, emit_warnings=False,
                     clock=clock if clock is not None else StageClock())


@contextmanager
def reported_warnings(explainer: Explainer, summary: RunSummary, progress: ProgressSink) -> Iterator[None]:
    """Around a run: the explainer's planning warnings first, the maps' diagnostics at the end (both as
    progress notes and in the summary); per-call completeness warnings are summarised instead."""
    for text in explainer.warnings:
        progress.note(f"warning: {text}")
        summary.warnings.append(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompletenessWarning)
        yield
    for text in summary.diagnose():
        progress.note(f"warning: {text}")


@contextmanager
def locked_outdir(cfg: Config, inputs: Sequence[str], outdir: Path, progress: ProgressSink, *,
                  items: Sequence[InputImage] | None = None, explainer: Explainer | None = None,
                  fold_batchnorms: bool = True, clock: StageClock | None = None
                  ) -> Iterator[tuple[list[InputImage], Explainer]]:
    """The start of a command that writes into OUTDIR, cheapest failure first: the inputs and OUTDIR
    checked (unless ``items`` says that was done, :func:`.preflight.prepare_inputs`), OUTDIR locked when
    it exists already (a busy OUTDIR is refused before the model loads), the explainer built (or
    ``explainer`` reused: one already built for ``cfg``) and its notices shown, OUTDIR created and
    locked. Yields the images and the explainer; the lock is held until the block ends, so everything a
    command writes (explanations, evaluation, figures, report) is written under it. ``clock``: the
    command's stage clock (:mod:`xaicli.timing`), for a new explainer."""
    clock = clock if clock is not None else StageClock()
    if items is None:
        with clock.foreground("inputs"):
            items = prepare_inputs(inputs, outdir, progress.note)
    items = list(items)
    lock = OutdirLock(outdir)
    try:
        if outdir.is_dir():
            lock.acquire()
        explainer = explainer or command_explainer(cfg, fold_batchnorms=fold_batchnorms, clock=clock)
        for notice in explainer.notices:
            progress.note(f"notice: {notice}")
        outdir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        yield items, explainer
    finally:
        lock.release()


def explain(cfg: Config, inputs: Sequence[str], outdir: Path, *, overwrite: bool = False,
            progress: ProgressSink | None = None, items: Sequence[InputImage] | None = None,
            explainer: Explainer | None = None, clock: StageClock | None = None) -> RunSummary:
    """Explain every image under ``inputs`` into ``outdir``, with the figures and report ``cfg`` asks for.
    Per-image failures are recorded in the summary and the manifest, never raised; a problem with the
    inputs, OUTDIR or the config raises :class:`~xaicli.errors.UsageError` before anything is written.
    ``items``: the inputs already found and OUTDIR already checked; ``explainer``: one already built for
    ``cfg`` (see :func:`locked_outdir`); ``clock``: the command's stage clock (:mod:`xaicli.timing`; the
    CLI's holds its start-up), for a new explainer."""
    progress = progress or NullProgress()
    t0 = time.perf_counter()
    with locked_outdir(cfg, inputs, outdir, progress, items=items, explainer=explainer,
                       clock=clock) as (items, explainer):
        return explain_locked(cfg, explainer, items, inputs, outdir, overwrite=overwrite, progress=progress,
                              t0=t0)


def explain_locked(cfg: Config, explainer: Explainer, items: Sequence[InputImage], inputs: Sequence[str],
                   outdir: Path, *, overwrite: bool = False, progress: ProgressSink | None = None,
                   t0: float | None = None) -> RunSummary:
    """:func:`explain` inside :func:`locked_outdir`: the explain loop, then the figures and the report
    (a command that also evaluates calls this with its own explainer, under its own lock)."""
    progress = progress or NullProgress()
    figures = None
    if cfg.figures.topk or cfg.figures.compare:
        order = {it.path: i for i, it in enumerate(items)}
        figures = FigureCollector.for_explainer(explainer, cfg.figures.images_per_class, order)
    summary = explain_shard(cfg, explainer, items, inputs, outdir, overwrite=overwrite, progress=progress,
                            sinks=[figures] if figures else [], t0=t0)
    if figures is not None:
        if summary.images_skipped:
            recompute_skipped(explainer, list(items), figures, outdir, summary, progress)
        write_figures(cfg, figures, outdir, progress)
    if cfg.figures.html:
        progress.note(f"report: {write_report(outdir)}")
    return summary


def explain_shard(cfg: Config, explainer: Explainer, items: Sequence[InputImage], inputs: Sequence[str],
                  outdir: Path, *, overwrite: bool = False,
                  progress: ProgressSink | None = None, sinks: Sequence = (), manifest_name: str = MANIFEST,
                  run_json_name: str = RUN_JSON, done_manifests: Sequence[Path] = (),
                  announce_to: Sequence[str] = (), sweep_temporaries: bool = True,
                  t0: float | None = None) -> RunSummary:
    """The explain loop over ``items``: files + manifest (+ ``sinks``, each called with every batch).

    ``manifest_name``/``run_json_name``/``done_manifests``/``announce_to``/
    ``sweep_temporaries`` let a distributed rank write its own shard while counting the merged manifest's
    rows as done.
    """
    progress = progress or NullProgress()
    t0 = time.perf_counter() if t0 is None else t0
    with explainer.clock.foreground("identity"):
        writer = ExplanationWriter(cfg, explainer, outdir, inputs, identity=run_identity(explainer),
                                   overwrite=overwrite, progress=progress,
                                   manifest_name=manifest_name, run_json_name=run_json_name,
                                   done_manifests=done_manifests, announce_to=announce_to,
                                   sweep_temporaries=sweep_temporaries, t0=t0)
        writer.summary.timings["load_model"] = time.perf_counter() - t0
        todo = writer.pending(items)
    with reported_warnings(explainer, writer.summary, progress):
        progress.start(len(todo), "explaining")
        try:
            with writer:
                for batch in explain_items(explainer, todo, progress.note):
                    writer.add(batch)
                    for sink in sinks:
                        sink(batch)
                    progress.advance(batch.count)
        finally:
            progress.stop()
    return writer.summary
