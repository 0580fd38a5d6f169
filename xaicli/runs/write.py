"""The files + manifest sink of ``explain``: overlays, raw maps, manifest rows and run.json.

Per batch: overlays are coloured and blended on the device (only uint8 pixels leave it); PNG/npy
encoding runs on a writer pool that overlaps the next batch; the batch's manifest rows are appended
once its files exist (one batch late, so the writes overlap the next batch's compute). On any exit -
finished, interrupted, failed - the last batch's rows are committed if its files made it, and run.json
records what happened (``status``: complete | interrupted | failed).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from xaicli import __version__
from xaicli.config import Config
from xaicli.engine import ExplainedBatch, Explainer, flat_maps
from xaicli.engine.discover import InputImage, true_label
from xaicli.outputs import atomic
from xaicli.outputs.layout import MANIFEST, RUN_JSON, output_stem
from xaicli.outputs.manifest import ManifestRow, ManifestWriter, RowKey, read_rows
from xaicli.render.overlay import overlay
from xaicli.runs.progress import NullProgress, ProgressSink
from xaicli.runs.summary import RunSummary


class ExplanationWriter:
    """Writes one run's explanations into ``outdir``; use as a context manager around the loop.

    ``manifest_name``/``run_json_name`` and ``done_manifests`` (more manifests whose rows count as done)
    are for the ranks of a distributed run (:mod:`xaicli.runs.distributed`).
    """

    def __init__(self, cfg: Config, explainer: Explainer, outdir: Path, inputs: Sequence[str], *,
                 overwrite: bool = False, progress: ProgressSink | None = None, manifest_name: str = MANIFEST,
                 run_json_name: str = RUN_JSON, done_manifests: Sequence[Path] = (), t0: float | None = None):
        self.cfg, self.explainer, self.outdir = cfg, explainer, outdir
        self.overwrite = overwrite
        self.progress = progress or NullProgress()
        self.manifest_path = outdir / manifest_name
        self.run_json_path = outdir / run_json_name
        self.done_manifests = list(done_manifests)
        self.summary = RunSummary(outdir=outdir, device=str(explainer.device))
        self.done: set[RowKey] = set()
        self.run_info = run_record(cfg, explainer, inputs)
        self._pending: tuple[list[Future], list[ManifestRow]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._manifest: ManifestWriter | None = None
        self._t0 = time.perf_counter() if t0 is None else t0  # the command's start, for the summary

    # --- before the loop --------------------------------------------------------------------------------

    def pending(self, items: Sequence[InputImage]) -> list[InputImage]:
        """The images that still need explaining (all of them with ``overwrite``)."""
        self.summary.images_total = len(items)
        if not self.overwrite:
            self.done = {r.key for path in (self.manifest_path, *self.done_manifests)
                         for r in read_rows(path) if r.ok}
        keys = [(m, layer, s.name) for m, layer in self.explainer.map_keys for s in self.explainer.slots]
        todo = [it for it in items
                if self.overwrite or not {(str(it.path), *k) for k in keys} <= self.done]
        self.summary.images_skipped = len(items) - len(todo)
        if self.summary.images_skipped:
            where = MANIFEST if self.done_manifests else self.manifest_path.name
            self.progress.note(f"resuming: {self.summary.images_skipped} image(s) already in {where}, "
                               "skipped")
        return todo

    def __enter__(self) -> ExplanationWriter:
        self.outdir.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=max(2, min(8, (torch.get_num_threads() or 2))),
                                        thread_name_prefix="xaicli-write")
        self._manifest = ManifestWriter(self.manifest_path, fresh=self.overwrite)
        self._t_loop = time.perf_counter()
        return self

    # --- per batch --------------------------------------------------------------------------------------

    def add(self, batch: ExplainedBatch) -> None:
        """Queue the batch's files; commit the previous batch's rows (its files were written meanwhile)."""
        s = self.summary
        errors = [ManifestRow.failed(str(it.path), msg) for it, msg in batch.failures]
        s.failures += [(str(it.path), msg) for it, msg in batch.failures]
        s.oom_retries = self.explainer.batching.retries
        futures, rows = self._emit(batch) if batch.result is not None else ([], [])
        if self._pending is not None:
            self._commit()
        self._pending = (futures, rows + errors)
        s.images_explained += len(batch.items)

    def _emit(self, batch: ExplainedBatch) -> tuple[list[Future], list[ManifestRow]]:
        """Render on the device, queue file writes, and build the manifest rows of one batch."""
        ex, out, result = self.explainer, self.cfg.output, batch.result
        classes = ex.classes
        targets, probs = result.targets.cpu().tolist(), result.probs.cpu().tolist()
        images = batch.images.to(ex.device, non_blocking=True)
        futures, rows = [], []
        write = self._pool.submit
        tolerance = {pm.name: pm.options.get("tolerance") for pm in ex.methods}
        for (method, layer), m in result.maps.items():
            flat = flat_maps(m, images)  # (B, K): nothing to show; drawn neutral, flagged, counted
            over = overlay(images, m, out.colormap, out.alpha, ex.is_signed(method), out.overlay_scale, flat
                           ).cpu().numpy() if out.overlays else None
            arr = m.cpu().numpy() if out.maps else None
            extras = {name: v.float().cpu().tolist() for (meth, name), v in result.extras.items()
                      if meth == method}
            extras["flat"] = flat.cpu().tolist()
            stats = self.summary.stats(method, layer, tolerance.get(method))
            for b, item in enumerate(batch.items):
                label = true_label(item, classes)
                for k, slot in enumerate(ex.slots):
                    if (str(item.path), method, layer, slot.name) in self.done:
                        continue
                    t = targets[b][k]
                    stem = output_stem(item.rel, method, layer, slot.rank, t, classes[t])
                    row = ManifestRow(image=str(item.path), method=method, layer=layer, slot=slot.name,
                                      target=t, target_name=classes[t], rank=slot.rank,
                                      score=round(probs[b][k], 6), label=label,
                                      extras={name: values[b][k] for name, values in extras.items()})
                    if over is not None:
                        row.overlay = f"{stem}.png"
                        futures.append(write(atomic.write_png, self.outdir / row.overlay, over[b, k]))
                    if arr is not None:
                        row.map = f"{stem}.npy"
                        futures.append(write(atomic.write_npy, self.outdir / row.map, arr[b, k]))
                    stats.add(row.extras["flat"], row.extras.get("ig_delta_rel"))
                    rows.append(row)
        return futures, rows

    def _commit(self) -> None:
        futures, rows = self._pending
        self._pending = None
        for f in futures:
            f.result()  # re-raises a write error (disk full, permissions): that is not a per-image problem
        self._manifest.write(rows)
        self.summary.rows_written += sum(1 for r in rows if r.ok)  # error rows are counted as failures

    # --- after the loop ---------------------------------------------------------------------------------

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        status = "complete" if exc_type is None else (
            "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed")
        if exc_type is None and self._pending is not None:
            self._commit()
        if exc_type is None:
            self.summary.timings["explain"] = time.perf_counter() - self._t_loop
        self._pool.shutdown(wait=True)
        if self._pending is not None and all(f.exception() is None for f in self._pending[0]):
            self._commit()  # interrupted or failed after the last batch was computed: its files are on disk
        self._manifest.close()
        self.summary.seconds = time.perf_counter() - self._t0
        self.summary.diagnose()
        self.run_info.update(status=status, summary=self.summary.to_dict(),
                             oom_backoff=self.explainer.batching.report(),
                             finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        atomic.write_text(self.run_json_path, json.dumps(self.run_info, indent=2, default=str) + "\n")


def run_record(cfg: Config, explainer: Explainer, inputs: Sequence[str]) -> dict[str, Any]:
    """run.json before the run: resolved config, versions, device and how the engine prepared the model."""
    import torchvision

    loaded = explainer.loaded
    resolved = cfg.to_dict()
    resolved["preprocess"].update(size=list(loaded.size), mode=loaded.mode, mean=list(loaded.mean),
                                  std=list(loaded.std))
    resolved["methods"] = [{"name": pm.name, "layers": pm.layers, "options": pm.options}
                           for pm in explainer.methods]
    b = explainer.batching
    return {
        "xaicli": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "device": str(explainer.device),
        "device_name": torch.cuda.get_device_name(explainer.device) if explainer.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "inputs": [str(i) for i in inputs], "classes": loaded.classes,
        "slots": [s.name for s in explainer.slots], "config": resolved,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "engine": {"channels_last": explainer.channels_last, "folded_batchnorms": len(explainer.folded),
                   "compiled_modules": explainer.compiled, "cpu_micro_batch": b.micro_batch,
                   "call_size": b.initial.get("call_size"), "chunk_sizes": b.initial.get("chunk_sizes"),
                   "inner_chunks": b.capped},
    }
