"""End-to-end row: a folder of JPEG files -> overlay PNGs + ``.npy`` maps, both tools as fresh processes.

xaicli runs ``python -m xaicli explain IMAGES -c bench.yaml -o OUT --quiet`` (Grad-CAM, top-1, overlays
and maps, the config's default batch size); the reference is ``benchmarks/pgc_user_script.py``, the
script a pytorch-grad-cam user writes. Both load the same checkpoint (the benchmark model's random
weights), start from nothing (interpreter start, imports and model loading are part of the time: that is
what a user waits for), and are timed alternately, wall clock, median over ``e2e_repeats`` after one
untimed run of each (so that both find the libraries and the JPEGs in the file cache). Each run
writes into an empty output folder. Afterwards the outputs are checked: one PNG and one map per image on
both sides, and the maps' agreement on a sample of images.
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


def end_to_end_row(opts, model: torch.nn.Module, layer: str, log: Callable[[str], None] = print):
    """The end-to-end row (see the module docstring) for ``model``'s weights, explained at ``layer``;
    ``None`` when asked for no images."""
    from benchmarks.suite import E2E_TARGET, Row
    from xaicli.config import RunConfig

    n = opts.e2e_images
    if n < 1:
        return None
    work = Path(opts.workdir) if opts.workdir else Path(tempfile.mkdtemp(prefix="xaicli-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    images = work / "jpegs"
    make_jpegs(images, n, opts.seed)
    ckpt = work / "model.pt"
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, ckpt)
    import yaml

    cfg = work / "bench.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"source": "torchvision", "name": opts.model, "checkpoint": str(ckpt)},
        "preprocess": {"size": [opts.size, opts.size]},
        "methods": [{"name": "gradcam", "layers": [layer]}],
        "targets": {"topk": 1},
        "output": {"overlays": True, "maps": True},
        "run": {"device": opts.device, "precision": opts.precision},
    }, sort_keys=False))
    ours_out, ref_out = work / "out_xaicli", work / "out_pgc"
    ours_cmd = [sys.executable, "-m", "xaicli", "explain", str(images), "-c", str(cfg), "-o", str(ours_out),
                "--quiet"]
    script = Path(opts.user_script) if opts.user_script else default_user_script()
    ref_cmd = None
    note = ""
    if not reference_available(PGC):
        note = "pytorch-grad-cam not installed: reference skipped"
    elif not script.is_file():
        note = f"user script {script} not found: reference skipped"
    else:
        ref_cmd = [sys.executable, str(script), str(images), str(ref_out), "--model", opts.model,
                   "--checkpoint", str(ckpt), "--layer", layer, "--size", str(opts.size), "--device",
                   opts.device]
    _timed(ours_cmd, ours_out)  # untimed warm-up of each: the file cache holds the libraries and JPEGs
    if ref_cmd:
        _timed(ref_cmd, ref_out)
    ours_s: list[float] = []
    ref_s: list[float] = []
    for r in range(opts.e2e_repeats):
        ours_s.append(_timed(ours_cmd, ours_out))
        log(f"  e2e xaicli run {r + 1}: {ours_s[-1]:.1f}s")
        if ref_cmd:
            ref_s.append(_timed(ref_cmd, ref_out))
            log(f"  e2e pytorch-grad-cam script run {r + 1}: {ref_s[-1]:.1f}s")
    ours_rate = n / statistics.median(ours_s)
    ref_rate = n / statistics.median(ref_s) if ref_s else None
    agreement = _check_outputs(ours_out, ref_out if ref_cmd else None, images, n)
    ratio = ours_rate / ref_rate if ref_rate else None
    return Row(f"gradcam end-to-end ({n} JPEG -> PNG + npy)", opts.model, opts.size, RunConfig().batch_size,
               n, ours_rate,
               "pytorch-grad-cam user script, batch 1" if ref_cmd else "-", ref_rate, ratio,
               f">= {E2E_TARGET:g}x", (ratio >= E2E_TARGET) if ratio else None, agreement,
               "user script's maps" if agreement is not None else "",
               note=note or "fresh processes, wall clock incl. start-up; JPEGs "
               f"{E2E_SOURCE[0]}x{E2E_SOURCE[1]}",
               seconds={"xaicli": ours_s, **({"reference": ref_s} if ref_s else {})})


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
