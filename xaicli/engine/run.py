"""The run loop of ``xaicli explain``: stream batches through the methods, write files and manifest.

Per batch: one transfer to the device, normalisation there; each method runs on the whole batch (the
first method's clean forward fixes the targets and scores for all others); overlays are coloured and
blended on the device; PNG/npy encoding runs on a writer pool that overlaps the next batch; manifest
rows are appended once their files exist.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from xaicli import __version__
from xaicli.config import Config
from xaicli.engine.backoff import OOMBackoff, OutOfMemoryAtMinimum, merge_results
from xaicli.engine.discover import InputImage, discover_images
from xaicli.engine.loader import iter_batches
from xaicli.engine.microbatch import cap_inner_chunks, cpu_micro_batch
from xaicli.engine.plan import PlannedMethod, plan_methods, plan_targets
from xaicli.engine.preprocess import Preprocess
from xaicli.methods.base import TargetSpec
from xaicli.models.loader import LoadedModel, load_model, select_device
from xaicli.outputs import atomic
from xaicli.outputs.layout import MANIFEST, RUN_JSON, output_stem
from xaicli.outputs.manifest import ManifestWriter, read_manifest, row_key
from xaicli.render.overlay import overlay


class ProgressSink(Protocol):
    """What the engine reports while it runs (the CLI supplies a Rich bar or plain log lines)."""

    def start(self, total: int, description: str) -> None: ...
    def advance(self, n: int) -> None: ...
    def note(self, text: str) -> None: ...
    def stop(self) -> None: ...


class NullProgress:
    def start(self, total: int, description: str) -> None: ...
    def advance(self, n: int) -> None: ...
    def note(self, text: str) -> None: ...
    def stop(self) -> None: ...


@dataclass
class BatchResult:
    """One explained batch, on the CPU, for consumers such as figure builders."""

    items: list[InputImage]
    images: Tensor  # (B, C, H, W) display images in [0, 1]
    targets: Tensor  # (B, K)
    probs: Tensor  # (B, K) softmax probability of each target
    maps: dict[tuple[str, str | None], Tensor]  # (method, layer) -> (B, K, H, W)
    slots: list[str]
    classes: list[str] = field(default_factory=list)  # the model's class names (targets index them)


@dataclass
class RunSummary:
    outdir: Path
    device: str
    images_total: int = 0
    images_explained: int = 0
    images_skipped: int = 0
    rows_written: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    oom_retries: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "outdir": str(self.outdir), "device": self.device, "images_total": self.images_total,
            "images_explained": self.images_explained, "images_skipped": self.images_skipped,
            "images_failed": len(self.failures), "rows_written": self.rows_written,
            "failures": [{"image": p, "error": e} for p, e in self.failures],
            "seconds": round(self.seconds, 3), "images_per_second": round(
                self.images_explained / self.seconds, 2) if self.seconds else None,
            "timings": {k: round(v, 3) for k, v in self.timings.items()}, "oom_retries": self.oom_retries,
            "exit_code": self.exit_code,
        }


class Explainer:
    """A model, its methods and targets, ready to explain batches of display images (library API).

    ``explain_batch`` is what the CLI runs per batch; it is also the way to use xaicli's engine on
    tensors from Python.
    """

    def __init__(self, cfg: Config, loaded: LoadedModel | None = None, device: torch.device | None = None):
        self.cfg = cfg
        self.loaded = loaded or load_model(cfg)
        self.device = device or select_device(cfg.run.device)
        self.pre = Preprocess(self.loaded.size, self.loaded.mode, self.loaded.mean, self.loaded.std,
                              cfg.preprocess.resize, cfg.preprocess.alpha_background)
        model = self.loaded.model.to(self.device)
        self.methods: list[PlannedMethod] = plan_methods(cfg, self.loaded)
        self.hooked_layers = [layer for pm in self.methods for layer in pm.layers if layer is not None]
        self.folded = self._fold_batchnorms()  # before channels_last, which then converts the new weights
        self.channels_last = use_channels_last(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.compiled = self._compile() if cfg.run.compile else []
        self.micro_batch = cpu_micro_batch(self.device, self.loaded.size)  # see engine/microbatch.py
        self.inner_chunks = cap_inner_chunks([pm.method for pm in self.methods],
                                             [mc.options for mc in cfg.methods],
                                             self.micro_batch) if self.micro_batch else {}
        self.target_spec, self.slots = plan_targets(cfg, self.loaded.classes)
        self.mean, self.std = self.pre.normaliser(self.device)
        lo, hi = (0 - self.mean) / self.std, (1 - self.mean) / self.std
        for pm in self.methods:
            if hasattr(pm.method, "input_range"):
                pm.method.input_range = (lo.flatten(), hi.flatten())  # raw 0 and raw 1, normalised

    def _fold_batchnorms(self) -> list[str]:
        """Fold eval-mode batch norms into their convolutions where verified equal (:mod:`.fold`)."""
        from xaicli.engine.fold import fold_batchnorms

        probe = torch.randn((1, *self.loaded.input_shape), generator=torch.Generator().manual_seed(0))
        return fold_batchnorms(self.loaded.model, probe.to(self.device), self.hooked_layers)

    def _compile(self) -> list[str]:
        """``run.compile``: compile the submodules no hook needs (see :mod:`xaicli.engine.compile`)."""
        import warnings

        from xaicli.engine.compile import compile_around_hooks, rule_methods

        blocked = rule_methods(self.methods)
        if blocked:
            warnings.warn(f"run.compile ignored: {', '.join(blocked)} swap ReLU rules at run time",
                          stacklevel=3)
            return []
        return compile_around_hooks(self.loaded.model, self.hooked_layers)

    def autocast(self):
        precision = self.cfg.run.precision
        if precision == "fp32" or self.device.type != "cuda":
            return nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    def explain_batch(self, images: Tensor) -> tuple[Tensor, Tensor, dict, dict]:
        """(B, C, H, W) display images in [0, 1] -> targets (B, K), probs (B, K),
        maps {(method, layer): (B, K, H, W)}, extras {(method, name): (B, K)}; all on the device."""
        if self.micro_batch and images.shape[0] > self.micro_batch:  # CPU: cache-sized calls, same maps
            step = self.micro_batch
            return merge_results([self.explain_batch(images[i : i + step])
                                  for i in range(0, images.shape[0], step)])
        x = images.to(self.device, non_blocking=True)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        spec: TargetSpec = self.target_spec
        logits = None
        maps: dict[tuple[str, str | None], Tensor] = {}
        extras: dict[tuple[str, str], Tensor] = {}
        with self.autocast():
            for pm in self.methods:
                exp = pm.method.explain(x, spec)
                spec = exp.targets
                if logits is None and exp.logits is not None:
                    logits = exp.logits
                for layer, m in exp.maps.items():
                    maps[(pm.name, layer)] = m.float()
                for name, v in exp.extras.items():
                    extras[(pm.name, name)] = v
            if logits is None:
                with torch.no_grad():
                    logits = self.loaded.model(x)
        targets = spec if isinstance(spec, Tensor) else logits.topk(spec.k, dim=1).indices
        if targets.shape[0] != x.shape[0]:
            targets = targets.expand(x.shape[0], -1)
        probs = logits.float().softmax(dim=1).gather(1, targets)
        return targets, probs, maps, extras

    def is_signed(self, method_name: str) -> bool:
        return next(p for p in self.methods if p.name == method_name).method.signed()


def use_channels_last(device: torch.device) -> bool:
    """Channels-last (NHWC) model and inputs: on CUDA (tensor cores) and on the CPU (oneDNN convolutions
    without layout reorders, ~1.5x on ResNet-18 with 2 cores); maps equal up to float rounding."""
    return device.type in ("cuda", "cpu")


def _expected_keys(item: InputImage, methods: Sequence[PlannedMethod], slots: Sequence[str]) -> set[tuple]:
    return {(str(item.path), pm.name, layer, slot) for pm in methods for layer in pm.layers for slot in slots}


def run_explain(
    cfg: Config, inputs: Sequence[str], outdir: Path, *, overwrite: bool = False,
    progress: ProgressSink | None = None, on_batch: Callable[[BatchResult], None] | None = None,
    items: Sequence[InputImage] | None = None, manifest_name: str = MANIFEST, run_json_name: str = RUN_JSON,
    done_manifests: Sequence[Path] = (),
) -> RunSummary:
    """Explain every image under ``inputs`` into ``outdir``. Per-image failures are recorded, not raised.

    ``items`` (a pre-sharded image list), the file names and ``done_manifests`` (more manifests whose rows
    count as done, e.g. the merged manifest of an earlier run) are for distributed runs.
    """
    progress = progress or NullProgress()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    all_items = list(items) if items is not None else discover_images(inputs)
    explainer = Explainer(cfg)
    timings["load_model"] = time.perf_counter() - t0
    summary = RunSummary(outdir=outdir, device=str(explainer.device), images_total=len(all_items))

    outdir.mkdir(parents=True, exist_ok=True)
    manifest_path = outdir / manifest_name
    done = set() if overwrite else {row_key(r) for path in (manifest_path, *done_manifests)
                                    for r in read_manifest(path) if r.get("status") == "ok"}
    todo = [it for it in all_items
            if overwrite or not _expected_keys(it, explainer.methods, explainer.slots) <= done]
    summary.images_skipped = len(all_items) - len(todo)
    if summary.images_skipped:
        where = MANIFEST if done_manifests else manifest_name
        progress.note(f"resuming: {summary.images_skipped} image(s) already in {where}, skipped")

    run_info = _run_info(cfg, explainer, inputs)
    status = "running"
    writer_pool = ThreadPoolExecutor(max_workers=max(2, min(8, (torch.get_num_threads() or 2))),
                                     thread_name_prefix="xaicli-write")
    manifest = ManifestWriter(manifest_path, fresh=overwrite)
    progress.start(len(todo), "explaining")
    batch_size = cfg.run.batch_size
    backoff = OOMBackoff(explainer.explain_batch, batch_size, [pm.method for pm in explainer.methods],
                         progress.note, explainer.device)
    pending: tuple[list[Future], list[dict]] | None = None
    try:
        pin = explainer.device.type == "cuda"
        t_loop = time.perf_counter()
        for batch in iter_batches(todo, explainer.pre, batch_size, cfg.run.workers, pin_memory=pin):
            rows_err = [_error_row(it, msg) for it, msg in batch.failures]
            summary.failures += [(str(it.path), msg) for it, msg in batch.failures]
            futures: list[Future] = []
            rows: list[dict] = []
            result = None
            if batch.images is not None:
                try:
                    result = backoff(batch.images)
                except OutOfMemoryAtMinimum as err:  # nothing left to halve: they fail, the run goes on
                    rows_err += [_error_row(it, str(err)) for it in batch.items]
                    summary.failures += [(str(it.path), str(err)) for it in batch.items]
                summary.oom_retries = backoff.retries
            if result is not None:
                futures, rows = _emit(explainer, cfg, outdir, batch.items, batch.images, result, done,
                                      writer_pool)
                if on_batch is not None:
                    targets, probs, maps, _ = result
                    on_batch(BatchResult(batch.items, batch.images, targets.cpu(), probs.cpu(),
                                         {k: v.cpu() for k, v in maps.items()}, explainer.slots,
                                         explainer.loaded.classes))
            if pending is not None:  # the previous batch's files are written while this one computed
                summary.rows_written += _commit(manifest, *pending)
            pending = (futures, rows + rows_err)
            summary.images_explained += len(batch.items) if result is not None else 0
            progress.advance(len(batch.items) + len(batch.failures))
        if pending is not None:
            summary.rows_written += _commit(manifest, *pending)
            pending = None
        timings["explain"] = time.perf_counter() - t_loop
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        writer_pool.shutdown(wait=True)
        if pending is not None and all(f.exception() is None for f in pending[0]):
            # interrupted or failed after the last batch was computed: its files are on disk, keep them
            summary.rows_written += _commit(manifest, *pending)
        manifest.close()
        progress.stop()
        summary.seconds = time.perf_counter() - t0
        summary.timings = timings
        run_info.update(status=status, summary=summary.to_dict(), oom_backoff=backoff.report(),
                        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        import json

        atomic.write_text(outdir / run_json_name, json.dumps(run_info, indent=2, default=str) + "\n")
    return summary


def _emit(explainer: Explainer, cfg: Config, outdir: Path, items: list[InputImage], images: Tensor,
          result: tuple, done: set, pool: ThreadPoolExecutor) -> tuple[list[Future], list[dict]]:
    """Render on the device, queue file writes, and build the manifest rows of one batch."""
    targets, probs, maps, extras = result
    out = cfg.output
    classes = explainer.loaded.classes
    targets_l, probs_l = targets.cpu().tolist(), probs.cpu().tolist()
    images_dev = images.to(explainer.device, non_blocking=True)
    futures, rows = [], []
    for (method, layer), m in maps.items():
        signed = explainer.is_signed(method)
        over = overlay(images_dev, m, out.colormap, out.alpha, signed, out.overlay_scale).cpu().numpy() \
            if out.overlays else None
        arr = m.cpu().numpy() if out.maps else None
        ext = {name: v.float().cpu().tolist() for (meth, name), v in extras.items() if meth == method}
        for b, item in enumerate(items):
            for k, slot in enumerate(explainer.slots):
                key = (str(item.path), method, layer, slot)
                if key in done:
                    continue
                t = targets_l[b][k]
                rank = int(slot[3:]) if slot.startswith("top") else None
                stem = output_stem(item.rel, method, layer, rank, t, classes[t])
                row = {
                    "image": str(item.path), "status": "ok", "method": method, "layer": layer,
                    "slot": slot, "target": t, "target_name": classes[t], "rank": rank,
                    "score": round(probs_l[b][k], 6), "label": _label(item, classes),
                    "overlay": None, "map": None,
                }
                if over is not None:
                    row["overlay"] = f"{stem}.png"
                    futures.append(pool.submit(atomic.write_png, outdir / row["overlay"], over[b, k]))
                if arr is not None:
                    row["map"] = f"{stem}.npy"
                    futures.append(pool.submit(atomic.write_npy, outdir / row["map"], arr[b, k]))
                for name, values in ext.items():
                    row[name] = values[b][k]
                rows.append(row)
    return futures, rows


def _commit(manifest: ManifestWriter, futures: list[Future], rows: list[dict]) -> int:
    for f in futures:
        f.result()  # re-raises a write error (disk full, permissions): that is not a per-image problem
    manifest.write(rows)
    return sum(1 for r in rows if r.get("status") == "ok")  # explanations; error rows are counted as failures


def _label(item: InputImage, classes: list[str]) -> str | None:
    """The true class when the image sits in a folder named after one (ImageFolder layout)."""
    from xaicli.outputs.layout import safe_name

    folder = item.folder_label
    if folder is None:
        return None
    for c in classes:
        if folder == c or folder == safe_name(c):
            return c
    return None


def _error_row(item: InputImage, message: str) -> dict:
    return {"image": str(item.path), "status": "error", "error": message, "method": None, "layer": None,
            "slot": None, "target": None, "target_name": None, "rank": None, "score": None,
            "overlay": None, "map": None}


def _run_info(cfg: Config, explainer: Explainer, inputs: Sequence[str]) -> dict[str, Any]:
    import torchvision

    loaded = explainer.loaded
    resolved = cfg.to_dict()
    resolved["preprocess"].update(size=list(loaded.size), mode=loaded.mode, mean=list(loaded.mean),
                                  std=list(loaded.std))
    resolved["methods"] = [{"name": pm.name, "layers": pm.layers, "options": pm.options}
                           for pm in explainer.methods]
    return {
        "xaicli": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "device": str(explainer.device),
        "device_name": torch.cuda.get_device_name(explainer.device) if explainer.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "inputs": [str(i) for i in inputs], "classes": loaded.classes, "slots": explainer.slots,
        "config": resolved, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "engine": {"channels_last": explainer.channels_last, "folded_batchnorms": len(explainer.folded),
                   "compiled_modules": explainer.compiled, "cpu_micro_batch": explainer.micro_batch,
                   "inner_chunks": explainer.inner_chunks},
    }
