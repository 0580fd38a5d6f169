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
from collections.abc import Sequence
from pathlib import Path

from xaicli.config import Config
from xaicli.engine import Explainer, explain_items
from xaicli.engine.discover import InputImage
from xaicli.errors import ExitCode
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


def explain(cfg: Config, inputs: Sequence[str], outdir: Path, *, overwrite: bool = False,
            progress: ProgressSink | None = None, items: Sequence[InputImage] | None = None,
            clock: StageClock | None = None) -> RunSummary:
    """Explain every image under ``inputs`` into ``outdir``, with the figures and report ``cfg`` asks for.
    Per-image failures are recorded in the summary and the manifest, never raised; a problem with the
    inputs, OUTDIR or the config raises :class:`~xaicli.errors.UsageError` before anything is written."""
    progress = progress or NullProgress()
    clock = clock or StageClock()
    t0 = time.perf_counter()
    if items is None:
        with clock.foreground("inputs"):
            items = prepare_inputs(inputs, outdir, progress.note)
    items = list(items)
    lock = OutdirLock(outdir)
    try:
        if outdir.is_dir():
            lock.acquire()  # a busy OUTDIR is refused before the model loads, when it exists already
        explainer = Explainer(cfg, fold_batchnorms=True, functional_relu=True,  # the CLI owns its model
                              clock=clock)
        for notice in explainer.notices:
            progress.note(f"notice: {notice}")
        outdir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        figures = None
        if cfg.figures.topk or cfg.figures.compare:
            order = {it.path: i for i, it in enumerate(items)}
            figures = FigureCollector.for_explainer(explainer, cfg.figures.images_per_class, order)
        summary = explain_shard(cfg, explainer, items, inputs, outdir, overwrite=overwrite,
                                progress=progress, sinks=[figures] if figures else [], t0=t0)
        if figures is not None:
            if summary.images_skipped:
                recompute_skipped(explainer, items, figures, outdir, summary, progress)
            write_figures(cfg, figures, outdir, progress)
        if cfg.figures.html:
            progress.note(f"report: {write_report(outdir)}")
        return summary
    finally:
        lock.release()


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
