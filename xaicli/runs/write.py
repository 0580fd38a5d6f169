"""The files + manifest sink of ``explain``: overlays, raw maps, manifest rows and run.json.

Before the loop (:meth:`ExplanationWriter.pending`): the rows already in OUTDIR are checked against this
run's identity (:func:`~xaicli.outputs.fingerprint.check_resume`: a different configuration is refused,
exit 2), and the images whose every explanation is there - same fingerprint, same input file size and
modification time - are skipped.

On entering: leftover temporary files of killed runs are removed, the manifest is tidied (a torn last
line cut off; the error rows of images this run retries and the rows of images that changed since are
dropped, so each explanation and each failed image has one row), and run.json says ``running``.

Per batch: overlays are coloured and blended on the device (only uint8 pixels leave it); PNG/npy
encoding runs on a writer pool that overlaps the next batch; the batch's manifest rows are appended
once its files exist (one batch late, so the writes overlap the next batch's compute), as one
uninterruptible commit (:func:`~xaicli.outputs.interrupts.uninterruptible`). An image whose model output
is not finite, or whose outputs would land outside OUTDIR, gets an error row instead of files.

On any exit - finished, interrupted, failed - the last batch's rows are committed if its files made it,
and run.json records what happened (``status``: complete | interrupted | failed) in its ``history``.
"""

from __future__ import annotations

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
from xaicli.engine.discover import InputImage
from xaicli.outputs import atomic
from xaicli.outputs.fingerprint import RunIdentity, check_resume, map_key
from xaicli.outputs.interrupts import uninterruptible
from xaicli.outputs.layout import MANIFEST, RUN_JSON, OutsideOutdirError, output_path, output_stem
from xaicli.outputs.manifest import ManifestRow, ManifestWriter, RowKey, read_rows, tidy_manifest
from xaicli.outputs.outdir import remove_stale_temporaries
from xaicli.outputs.run_json import HISTORY_LIMIT, previous_history, read_run_json, write_run_json
from xaicli.render.overlay import overlay
from xaicli.runs.outcomes import ImageOutcome, image_outcomes
from xaicli.runs.progress import NullProgress, ProgressSink
from xaicli.runs.summary import RunSummary

NOT_FINITE = "the model's output for this image is not finite (NaN or inf logits); nothing was written"


class ExplanationWriter:
    """Writes one run's explanations into ``outdir``; use as a context manager around the loop.

    ``manifest_name``/``run_json_name``, ``done_manifests`` (more manifests whose rows count as done),
    ``announce_to`` (more run.json names that get the ``running`` record at the start) and
    ``sweep_temporaries`` are for the ranks of a distributed run (:mod:`xaicli.runs.distributed`).
    """

    def __init__(self, cfg: Config, explainer: Explainer, outdir: Path, inputs: Sequence[str], *,
                 identity: RunIdentity, overwrite: bool = False,
                 progress: ProgressSink | None = None, manifest_name: str = MANIFEST,
                 run_json_name: str = RUN_JSON, done_manifests: Sequence[Path] = (),
                 announce_to: Sequence[str] = (), sweep_temporaries: bool = True, t0: float | None = None):
        self.cfg, self.explainer, self.outdir = cfg, explainer, outdir
        self.identity = identity
        self.overwrite = overwrite
        self.progress = progress or NullProgress()
        self.manifest_path = outdir / manifest_name
        self.run_json_name = run_json_name
        self.announce_to = list(announce_to)
        self.sweep_temporaries = sweep_temporaries
        self.done_manifests = list(done_manifests)
        self.summary = RunSummary(outdir=outdir, device=str(explainer.device))
        self.fingerprints = identity.fingerprints()
        self.done: set[RowKey] = set()
        self.run_info = run_record(cfg, explainer, inputs, identity)
        self.history: list[dict[str, Any]] = []
        self._retried: set[str] = set()  # rels of this run's images: their old error rows are dropped
        self._stale: set[str] = set()  # rels whose input file changed: all their old rows are dropped
        self._rels: list[str] = []  # this run's images, in order (the summary's per-image outcomes)
        self._paths: dict[str, str] = {}  # rel -> image path, of this run's images
        self._top1: dict[str, str] = {}  # rel -> top-1 class of images explained with no row to write
        self._pending: tuple[list[Future], list[ManifestRow]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._manifest: ManifestWriter | None = None
        self._nonfinite_maps = 0
        self._t0 = time.perf_counter() if t0 is None else t0  # the command's start, for the summary

    # --- before the loop --------------------------------------------------------------------------------

    def pending(self, items: Sequence[InputImage]) -> list[InputImage]:
        """The images that still need explaining (all of them with ``overwrite``). Raises
        :class:`~xaicli.outputs.fingerprint.IdentityMismatch` when OUTDIR holds another configuration."""
        self.summary.images_total = len(items)
        self._rels = [str(it.rel) for it in items]
        self._paths = {str(it.rel): str(it.path) for it in items}
        ex = self.explainer
        if ex.explains_true_class:
            self.summary.unlabelled = [str(it.rel) for it in items
                                       if it.problem is None and ex.labels.index(it) is None]
        if self.overwrite:
            return list(items)
        rows = [r for path in (self.manifest_path, *self.done_manifests) for r in read_rows(path)]
        self.history = previous_history(self.outdir)
        check_resume(self.identity, rows, self.history, self.outdir)
        current = {str(it.rel): it.stat_key() for it in items}
        self._retried = set(current)
        self._stale = {r.rel for r in rows if r.ok and r.rel in current and r.image_stat != current[r.rel]}
        self.done = {r.key for r in rows if r.ok and r.rel not in self._stale
                     and self.fingerprints.get(map_key(r.method or "", r.layer)) == r.fingerprint}
        todo = [it for it in items if not self._all_done(it)]
        self.summary.images_skipped = len(items) - len(todo)
        self._note_rendering_changes(rows)
        if self.summary.images_skipped:
            where = MANIFEST if self.done_manifests else self.manifest_path.name
            self.progress.note(f"resuming: {self.summary.images_skipped} image(s) already in {where}, "
                               "skipped")
        if self._stale:
            self.progress.note(f"resuming: {len(self._stale)} image(s) changed since they were explained: "
                               "explaining them again")
        return todo

    def _all_done(self, item: InputImage) -> bool:
        """Whether every explanation of ``item`` is in the manifest (an image with none to write, the true
        class alone without a label, is never done: it is still read and predicted)."""
        ex = self.explainer
        keys = {(str(item.rel), m, layer, s.name) for m, layer in ex.map_keys for s in ex.slots_of(item)}
        return bool(keys) and keys <= self.done

    def _note_rendering_changes(self, rows: list[ManifestRow]) -> None:
        """Overlay settings (``output.*``) do not change a map, so they are not in the fingerprint; when
        they differ from the previous run's, say that the files already written keep theirs. (How files
        are named, ``output.names``, is part of the run's identity instead: a resume refuses a change.)"""
        previous = (read_run_json(self.outdir) or {}).get("config", {}).get("output")
        ours = {k: v for k, v in self.cfg.to_dict()["output"].items() if k != "names"}
        if not rows or not isinstance(previous, dict):
            return
        changed = [f"output.{k} {previous[k]!r} -> {ours[k]!r}" for k in ours
                   if k in previous and previous[k] != ours[k]]
        if changed:
            self.progress.note(f"notice: {', '.join(changed)} since the previous run: the files already "
                               "written keep theirs; --overwrite redoes them")

    def __enter__(self) -> ExplanationWriter:
        self.outdir.mkdir(parents=True, exist_ok=True)
        if self.sweep_temporaries:
            remove_stale_temporaries(self.outdir)
        manifest = output_path(self.outdir, self.manifest_path.name)
        if not self.overwrite:
            retried, stale = self._retried, self._stale
            tidy_manifest(manifest, lambda r: r.rel in stale or (not r.ok and r.rel in retried))
        entry = {"started": self.run_info["started"], "finished": None, "status": "running",
                 "xaicli": __version__, "command": "explain", "inputs": self.run_info["inputs"],
                 "model": self.identity.model_description, "identity": self.identity.to_dict(),
                 "fingerprints": self.fingerprints, "summary": None}
        self.run_info.update(status="running", history=[*self.history, entry][-HISTORY_LIMIT:])
        for name in (self.run_json_name, *self.announce_to):  # before the manifest is truncated (--overwrite)
            write_run_json(self.outdir, self.run_info, name)
        self._pool = ThreadPoolExecutor(max_workers=max(2, min(8, (torch.get_num_threads() or 2))),
                                        thread_name_prefix="xaicli-write")
        self._manifest = ManifestWriter(manifest, fresh=self.overwrite)
        self._t_loop = time.perf_counter()
        return self

    # --- per batch --------------------------------------------------------------------------------------

    def add(self, batch: ExplainedBatch) -> None:
        """Queue the batch's files; commit the previous batch's rows (its files were written meanwhile)."""
        s = self.summary
        failures = list(batch.failures)
        futures, rows = self._emit(batch, failures) if batch.result is not None else ([], [])
        errors = [ManifestRow.failed(str(it.path), msg, str(it.rel)) for it, msg in failures]
        s.failures += [(str(it.path), msg) for it, msg in failures]
        s.oom_retries = self.explainer.batching.retries
        if self._pending is not None:
            self._commit()
        self._pending = (futures, rows + errors)
        s.images_explained += len(batch.items)

    def _emit(self, batch: ExplainedBatch, failures: list[tuple[InputImage, str]]
              ) -> tuple[list[Future], list[ManifestRow]]:
        """Render on the device, queue file writes, and build the manifest rows of one batch; images that
        cannot be written (non-finite output, a path leaving OUTDIR) are added to ``failures``."""
        ex, out, result = self.explainer, self.cfg.output, batch.result
        classes = ex.classes
        targets, probs = result.targets.cpu().tolist(), result.probs.cpu().tolist()
        predicted = result.predicted.cpu().tolist() if result.predicted is not None else None
        named = out.names == "class"  # file names carry the class (else the slot only)
        finite = torch.isfinite(result.probs).all(dim=1).cpu().tolist()
        writable = [self._writable(item, targets[b], classes) if finite[b] else NOT_FINITE
                    for b, item in enumerate(batch.items)]
        failures += [(item, why) for item, why in zip(batch.items, writable, strict=True) if why is not None]
        images = batch.images.to(ex.device, non_blocking=True)
        futures, rows = [], []
        write = self._pool.submit
        tolerance = {pm.name: pm.options.get("tolerance") for pm in ex.methods}
        for (method, layer), m in result.maps.items():
            fingerprint = self.fingerprints[map_key(method, layer)]
            bad_maps = ~torch.isfinite(m).flatten(2).all(dim=2)  # (B, K)
            if bool(bad_maps.any()):
                m = torch.nan_to_num(m, nan=0.0, posinf=1.0, neginf=0.0)
            bad = bad_maps.cpu().tolist()
            flat = flat_maps(m, images)  # (B, K): nothing to show; drawn neutral, flagged, counted
            over = overlay(images, m, out.colormap, out.alpha, ex.is_signed(method), out.overlay_scale, flat
                           ).cpu().numpy() if out.overlays else None
            arr = m.cpu().numpy() if out.maps else None
            extras = {name: v.float().cpu().tolist() for (meth, name), v in result.extras.items()
                      if meth == method}
            extras["flat"] = flat.cpu().tolist()
            stats = self.summary.stats(method, layer, tolerance.get(method))
            for b, item in enumerate(batch.items):
                if writable[b] is not None:
                    continue
                label = ex.labels.name(item)
                top1 = classes[predicted[b]] if predicted is not None else None
                if top1 is not None and not ex.slots_of(item):
                    self._top1[str(item.rel)] = top1  # no row carries it
                stat = item.stat_key()
                for k, slot in enumerate(ex.slots):
                    if (str(item.rel), method, layer, slot.name) in self.done:
                        continue
                    if slot.kind == "true" and label is None:
                        continue  # no label: the stand-in map is not the true class (listed in a warning)
                    t = targets[b][k]
                    stem = output_stem(item.rel, method, layer, slot.name, classes[t] if named else None)
                    row = ManifestRow(image=str(item.path), rel=str(item.rel), method=method, layer=layer,
                                      slot=slot.name, target=t, target_name=classes[t], rank=slot.rank,
                                      score=round(probs[b][k], 6), label=label, predicted=top1,
                                      fingerprint=fingerprint, image_stat=stat,
                                      extras={name: values[b][k] for name, values in extras.items()})
                    if bad[b][k]:
                        row.warning = "the map has non-finite values (NaN or inf), drawn and saved as 0 / 1"
                        self._nonfinite_maps += 1
                    if over is not None:
                        path = output_path(self.outdir, f"{stem}.png", image_outputs=True)
                        row.overlay = path.relative_to(self.outdir).as_posix()
                        futures.append(write(atomic.write_png, path, over[b, k]))
                    if arr is not None:
                        path = output_path(self.outdir, f"{stem}.npy", image_outputs=True)
                        row.map = path.relative_to(self.outdir).as_posix()
                        futures.append(write(atomic.write_npy, path, arr[b, k]))
                    stats.add(row.extras["flat"], row.extras.get("ig_delta_rel"))
                    rows.append(row)
        return futures, rows

    def _writable(self, item: InputImage, targets: list[int], classes: list[str]) -> str | None:
        """None when every output folder of ``item`` lies inside OUTDIR, else why not."""
        slot = self.explainer.slots[0].name
        name = classes[targets[0]] if self.cfg.output.names == "class" else None
        try:
            for method, layer in self.explainer.map_keys:
                stem = output_stem(item.rel, method, layer, slot, name)
                output_path(self.outdir, f"{stem}.npy", image_outputs=True)
        except OutsideOutdirError as err:
            return f"{err}; nothing was written"
        return None

    def _commit(self) -> None:
        """Wait for the pending batch's files, then append its rows: all of them, once, even if a signal
        arrives meanwhile (it is raised after the commit)."""
        with uninterruptible():
            futures, rows = self._pending
            self._pending = None
            for f in futures:
                f.result()  # re-raises a write error (disk full, permissions): not a per-image problem
            self._manifest.write(rows)
        self.summary.rows_written += sum(1 for r in rows if r.ok)  # error rows are counted as failures

    # --- after the loop ---------------------------------------------------------------------------------

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        with uninterruptible():  # a second Ctrl-C while finishing is raised once run.json is written
            self._finish(exc_type)

    def _finish(self, exc_type: type | None) -> None:
        status = "complete" if exc_type is None else (
            "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed")
        if exc_type is None and self._pending is not None:
            self._commit()
        if exc_type is None:
            self.summary.timings["explain"] = time.perf_counter() - self._t_loop
        self._pool.shutdown(wait=True)
        try:
            if self._pending is not None and all(f.exception() is None for f in self._pending[0]):
                self._commit()  # interrupted or failed after the last batch was computed: its files exist
        except OSError as err:  # the run ends with its own error anyway
            self.progress.note(f"warning: the last batch's rows were not written ({err.strerror or err}); "
                               "the next run redoes them")
        finally:
            self._manifest.close()
        if self._nonfinite_maps:
            self.progress.note(f"warning: {self._nonfinite_maps} map(s) had non-finite values (NaN or inf); "
                               "their rows carry a 'warning'")
        self.summary.seconds = time.perf_counter() - self._t0
        self._record_outcomes()
        self.summary.diagnose()
        finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        summary = self.summary.to_dict()
        self.run_info.update(status=status, summary=summary, oom_backoff=self.explainer.batching.report(),
                             finished=finished)
        self.run_info["history"][-1].update(status=status, finished=finished, summary={
            k: summary[k] for k in ("images_total", "images_explained", "images_skipped", "images_failed",
                                    "rows_written")})
        try:
            write_run_json(self.outdir, self.run_info, self.run_json_name)
        except OSError:
            if exc_type is None:
                raise  # otherwise the run's own error is the one to report; run.json still says running


    def _record_outcomes(self) -> None:
        """Per image of the run (resumed ones included), its outcome as the manifest now says, for the
        accuracy and the CI reports; images that failed have no 'true' map to miss."""
        try:
            rows = read_rows(self.manifest_path)
        except OSError as err:
            self.progress.note(f"warning: cannot read {self.manifest_path} back ({err.strerror or err}): "
                               "no accuracy")
            return
        outcomes = {o.rel: o for o in image_outcomes(rows, self._rels)}
        failed = {p for p, _ in self.summary.failures}
        for rel, top1 in self._top1.items():  # explained, nothing to write: no label, the true class only
            if rel not in outcomes and self._paths[rel] not in failed:
                outcomes[rel] = ImageOutcome(self._paths[rel], rel, predicted=top1)
        self.summary.outcomes = [outcomes[rel] for rel in self._rels if rel in outcomes]
        failed = {o.rel for o in self.summary.outcomes if not o.ok}
        self.summary.unlabelled = [rel for rel in self.summary.unlabelled if rel not in failed]


def run_record(cfg: Config, explainer: Explainer, inputs: Sequence[str], identity: RunIdentity
               ) -> dict[str, Any]:
    """run.json before the run: resolved config, versions, device, the model and its digest, the run's
    fingerprints, and how the engine prepared the model."""
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
        "slots": [s.name for s in explainer.slots], "model": explainer.digest.to_dict(),
        "config": resolved,
        "fingerprints": identity.fingerprints(), "identity": identity.to_dict(),
        "notices": list(explainer.notices),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "engine": {"channels_last": explainer.channels_last, "folded_batchnorms": len(explainer.folded),
                   "compiled_modules": explainer.compiled, "cpu_micro_batch": b.micro_batch,
                   "call_size": b.initial.get("call_size"), "chunk_sizes": b.initial.get("chunk_sizes"),
                   "inner_chunks": b.capped},
    }
