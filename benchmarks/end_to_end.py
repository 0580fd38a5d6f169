"""End-to-end rows: a folder of JPEG files -> overlay PNGs + ``.npy`` maps, both tools as fresh processes.

xaicli runs ``python -m xaicli explain IMAGES -c bench.yaml -o OUT --quiet`` (Grad-CAM, top-1, overlays
and maps, the config's default batch size); the reference is ``benchmarks/pgc_user_script.py``, the
script a pytorch-grad-cam user writes, with batches of 16 (``--batch 16``). Both load the same checkpoint
(the benchmark model's random weights), start from nothing (interpreter start, imports and model loading
are part of the time: that is what a user waits for), and are timed alternately, wall clock, median over
``e2e_repeats``. Before the timed runs, each process runs once untimed on the smallest folder (the
libraries in the file cache) and every JPEG is read once (the images in the file cache). Each run writes
into an empty output folder. Afterwards the outputs are checked: one PNG and one map per image on both
sides, and the maps' agreement on a sample of images.

For each folder size (``e2e_images``, default 256 and 1,024) there are two rows:

* **e2e vs the reference script** (images/s of the whole process, and the ratio);
* **e2e vs xaicli's engine alone** on the same images: the same config's :class:`~xaicli.engine.Explainer`
  prepared as the CLI prepares it, timed in this process on the images already decoded (what
  ``explain_images`` and copying the maps to the host cost: the most the pipeline could reach), in the
  same alternation. Its note gives the loop-only rate too (the run without its start-up).

The xaicli run's per-stage table (run.json's ``summary.stages``, :mod:`xaicli.timing`) of the median run
is kept with the row (``Row.stages``) and printed under the table: where the time goes.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.measure import pearson, synthetic_images
from benchmarks.references import PGC, reference_available

E2E_SOURCE = (640, 480)  # W x H of the generated JPEGs (a typical photo-ish size, resized to the model's)
REFERENCE_BATCH = 16  # the user script's batch (the issue measures against batches of 16)
E2E_TARGETS = ((1024, 3.5), (256, 3.0))  # (at least this many images, required ratio to the script)
ENGINE_FRACTION_TARGET = (1024, 0.85)  # (at least this many images, required fraction of the engine's rate)


def default_user_script() -> Path:
    """``benchmarks/pgc_user_script.py``, next to this module."""
    return Path(__file__).resolve().parent / "pgc_user_script.py"


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` synthetic JPEGs (quality 90) in four class sub-folders; reused when already there."""
    from PIL import Image

    paths = [folder / f"class{i % 4}" / f"img_{i:05d}.jpg" for i in range(n)]
    if all(p.is_file() for p in paths) and len(list(folder.rglob("*.jpg"))) == n:
        return paths
    shutil.rmtree(folder, ignore_errors=True)
    w, h = E2E_SOURCE
    for start in range(0, n, 32):
        block = synthetic_images(min(32, n - start), (h, w), seed=seed + start)
        pixels = (block.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        for j, arr in enumerate(pixels):
            path = paths[start + j]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path, quality=90)
    return paths


def _timed(cmd: list[str], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    return seconds


def _target(n: int, targets: tuple[tuple[int, float], ...]) -> float | None:
    return next((ratio for at_least, ratio in targets if n >= at_least), None)


class EngineOnly:
    """xaicli's engine on the decoded images of a folder, in this process (see the module docstring)."""

    def __init__(self, config: Path, images: Path):
        from xaicli.config import load_config
        from xaicli.engine import Explainer
        from xaicli.engine.discover import discover_images
        from xaicli.engine.loader import iter_batches

        self.explainer = Explainer(load_config(config), fold_batchnorms=True, functional_relu=True)
        items = discover_images([str(images)])
        batch = self.explainer.batching.batch_size
        self.batches = [b.images for b in iter_batches(items, self.explainer.pre, batch)]
        self.images = sum(int(b.shape[0]) for b in self.batches)
        self.run(self.batches[:1])  # warm-up: lazy initialisation, oneDNN primitives

    def run(self, batches: list | None = None) -> float:
        from xaicli.engine import explain_images

        t0 = time.perf_counter()
        for images in batches if batches is not None else self.batches:
            for m in explain_images(self.explainer, images).maps.values():
                m.cpu()
        return time.perf_counter() - t0


def end_to_end_rows(opts, model: torch.nn.Module, layer: str, log: Callable[[str], None] = print) -> list:
    """The end-to-end rows (see the module docstring) for ``model``'s weights, explained at ``layer``,
    one pair per size in ``opts.e2e_images``."""
    sizes = sorted({n for n in opts.e2e_images if n > 0})
    if not sizes:
        return []
    work = Path(opts.workdir) if opts.workdir else Path(tempfile.mkdtemp(prefix="xaicli-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "model.pt"
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, ckpt)
    cfg = _write_config(work / "bench.yaml", opts, ckpt, layer)
    script = Path(opts.user_script) if opts.user_script else default_user_script()
    note = ""
    if not reference_available(PGC):
        note = "pytorch-grad-cam not installed: reference skipped"
    elif not script.is_file():
        note = f"user script {script} not found: reference skipped"
    folders = {n: work / ("jpegs" if n == sizes[0] else f"jpegs_{n}") for n in sizes}
    for n, folder in folders.items():
        make_jpegs(folder, n, opts.seed)

    def commands(n: int) -> tuple[list[str], list[str] | None]:
        out = work / "out_xaicli", work / "out_pgc"
        ours = [sys.executable, "-m", "xaicli", "explain", str(folders[n]), "-c", str(cfg), "-o", str(out[0]),
                "--quiet"]
        ref = None if note else [
            sys.executable, str(script), str(folders[n]), str(out[1]), "--model", opts.model, "--checkpoint",
            str(ckpt), "--layer", layer, "--size", str(opts.size), "--device", opts.device, "--batch",
            str(REFERENCE_BATCH)]
        return ours, ref

    ours, ref = commands(sizes[0])  # untimed warm-up of each: the libraries in the file cache
    _timed(ours, work / "out_xaicli")
    if ref:
        _timed(ref, work / "out_pgc")
    rows = []
    for n in sizes:
        rows += _size_rows(opts, n, folders[n], cfg, commands(n), work, note, log)
    return rows


def _write_config(path: Path, opts, ckpt: Path, layer: str) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({
        "model": {"source": "torchvision", "name": opts.model, "checkpoint": str(ckpt)},
        "preprocess": {"size": [opts.size, opts.size]},
        "methods": [{"name": "gradcam", "layers": [layer]}],
        "targets": {"topk": 1},
        "output": {"overlays": True, "maps": True},
        "run": {"device": opts.device, "precision": opts.precision},
    }, sort_keys=False))
    return path


def _size_rows(opts, n: int, images: Path, cfg: Path, commands: tuple, work: Path, note: str,
               log: Callable[[str], None]) -> list:
    from benchmarks.suite import Row
    from xaicli.config import RunConfig

    ours_cmd, ref_cmd = commands
    ours_out, ref_out = work / "out_xaicli", work / "out_pgc"
    for path in images.rglob("*.jpg"):  # the images in the file cache, for both sides alike
        path.read_bytes()
    engine = EngineOnly(cfg, images)
    ours_s: list[float] = []
    ref_s: list[float] = []
    engine_s: list[float] = []
    summaries: list[dict] = []
    for r in range(opts.e2e_repeats):
        ours_s.append(_timed(ours_cmd, ours_out))
        summaries.append(json.loads((ours_out / "run.json").read_text())["summary"])
        log(f"  e2e {n}: xaicli run {r + 1}: {ours_s[-1]:.1f}s")
        if ref_cmd:
            ref_s.append(_timed(ref_cmd, ref_out))
            log(f"  e2e {n}: pytorch-grad-cam script run {r + 1}: {ref_s[-1]:.1f}s")
        engine_s.append(engine.run())
        log(f"  e2e {n}: xaicli engine only {r + 1}: {engine_s[-1]:.1f}s")
    median_run = summaries[ours_s.index(statistics.median_low(ours_s))]
    ours_rate = n / statistics.median(ours_s)
    ref_rate = n / statistics.median(ref_s) if ref_s else None
    engine_rate = engine.images / statistics.median(engine_s)
    agreement = _check_outputs(ours_out, ref_out if ref_cmd else None, images, n)
    ratio = ours_rate / ref_rate if ref_rate else None
    target = _target(n, E2E_TARGETS)
    batch = RunConfig().batch_size
    loop = median_run["timings"].get("explain")
    startup = median_run["seconds"] - loop if loop else None
    vs_ref = Row(
        f"gradcam end-to-end ({n} JPEG -> PNG + npy)", opts.model, opts.size, batch, n, ours_rate,
        f"pytorch-grad-cam user script, batch {REFERENCE_BATCH}" if ref_cmd else "-", ref_rate, ratio,
        f">= {target:g}x" if target else "", (ratio >= target) if (ratio and target) else None, agreement,
        "user script's maps" if agreement is not None else "",
        note=note or f"fresh processes, wall clock incl. start-up; JPEGs {E2E_SOURCE[0]}x{E2E_SOURCE[1]}",
        seconds={"xaicli": ours_s, **({"reference": ref_s} if ref_s else {})}, stages=median_run["stages"])
    fraction = ours_rate / engine_rate
    at_least, needed = ENGINE_FRACTION_TARGET
    loop_rate = n / loop if loop else None
    vs_engine = Row(
        f"gradcam end-to-end / engine only ({n} JPEG)", opts.model, opts.size, batch, n, ours_rate,
        "xaicli engine only, same images, decoded", engine_rate, fraction,
        f">= {needed:g}x" if n >= at_least else "", (fraction >= needed) if n >= at_least else None,
        note=(f"loop only (no start-up): {loop_rate:.1f} img/s = {loop_rate / engine_rate:.2f}x the engine; "
              f"start-up {startup:.1f}s") if loop_rate else "",
        seconds={"xaicli": ours_s, "engine": engine_s})
    return [vs_ref, vs_engine]


def _check_outputs(ours: Path, ref: Path | None, images: Path, n: int, sample: int = 32) -> float | None:
    """Every image has an overlay and a map on both sides; the maps' mean correlation on a sample."""
    rows = [json.loads(ln) for ln in (ours / "manifest.jsonl").read_text().splitlines() if ln.strip()]
    ok = [r for r in rows if r["status"] == "ok"]
    if len(ok) != n or not all((ours / r["overlay"]).is_file() and (ours / r["map"]).is_file() for r in ok):
        raise RuntimeError(f"xaicli wrote {len(ok)} complete explanations for {n} images")
    if ref is None:
        return None
    if len(list(ref.rglob("*.png"))) != n or len(list(ref.rglob("*.npy"))) != n:
        raise RuntimeError(f"the user script did not write one PNG and one map per image into {ref}")
    mine, theirs = [], []
    for r in ok[:sample]:
        rel = Path(r["image"]).relative_to(images).with_suffix("")
        mine.append(np.load(ours / r["map"]))
        theirs.append(np.load((ref / rel).with_suffix(".npy")))
    return pearson(np.stack(mine), np.stack(theirs))
