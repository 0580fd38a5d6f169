"""Peak memory of ``xaicli explain`` on a folder of large photos (issue 10: memory per image is bounded).

Generates ``--images`` JPEGs of ``--size`` (default 20 at 6000x4000, quality 90: gradients plus noise, so
they compress like photos rather than like flat colour), then runs ``python -m xaicli explain`` on them as
a child process - Grad-CAM on a torchvision ResNet-18 with random weights at 224x224, top-1, overlays and
maps, ``run.workers`` decode threads (default 8, the default on an 8-core machine) - and prints the
child's peak resident memory (``VmHWM``, the same as ``ru_maxrss``) and its wall time. It also prints
what decoding one of the photos adds to a process's peak (``Preprocess.load`` in a fresh child), the
per-image cost that parallel decode threads multiply.

    python benchmarks/memory.py                              # this checkout
    python benchmarks/memory.py --code /path/to/other/xaicli # another checkout, for a before/after
    python benchmarks/memory.py --images 4 --size 3000x2000  # a quick smoke run

Memory does not depend on the machine's load, so unlike the speed rows this number can be taken on a
shared machine. The images are kept in ``--cache`` (default: the temporary folder) between runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def make_photos(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """``n`` JPEGs of ``size`` (W, H) in ``folder`` (reused when already there): smooth colour gradients
    with Gaussian noise (sigma 12), quality 90 - about 1 bit per pixel, like a camera's photos."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    paths = []
    for i in range(n):
        path = folder / f"photo_{i:03d}.jpg"
        paths.append(path)
        if path.is_file():
            continue
        rng = np.random.default_rng(seed + i)
        x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
        y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
        base = np.stack([x * np.ones_like(y), y * np.ones_like(x), (x + y) / 2], axis=-1) * 200.0 + 20.0
        base += rng.normal(0.0, 12.0, (h, w, 1)).astype(np.float32)
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path, quality=90)
    return paths


def write_config(path: Path, workers: int) -> Path:
    cfg = {"model": {"source": "torchvision", "name": "resnet18"},
           "preprocess": {"size": [224, 224], "resize": "shorter"},
           "methods": [{"name": "gradcam", "layers": ["layer4"]}], "targets": {"topk": 1},
           "figures": {"html": False}, "run": {"device": "cpu", "workers": workers}}
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def peak_rss_of(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, float, int]:
    """Run ``cmd``; (its peak resident set size in bytes, wall seconds, exit code). The peak is read from
    ``/proc/<pid>/status`` (VmHWM) while it runs and from ``getrusage(RUSAGE_CHILDREN)`` after, the larger."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=cwd)
    hwm = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]) * 1024)
        except OSError:
            pass  # the process ended between poll() and the read
        time.sleep(0.05)
    err = proc.stderr.read()
    seconds = time.perf_counter() - t0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    if proc.returncode:
        print(err[-2000:], file=sys.stderr)
    return max(hwm, children), seconds, proc.returncode


DECODE_ONE = """
import resource, sys
import xaicli
from xaicli.engine.preprocess import Preprocess
pre = Preprocess((224, 224), "RGB", (0.5,), (0.25,), "shorter")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pre.load(sys.argv[1])
print(xaicli.__file__)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def decode_peak(photo: Path, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """(bytes that decoding ``photo`` to the model's input adds to a fresh process's peak RSS, the file of
    the xaicli package the child imported)."""
    out = subprocess.run([sys.executable, "-c", DECODE_ONE, str(photo)], env=env, capture_output=True,
                         text=True, check=True, cwd=cwd)
    package, peak = out.stdout.strip().splitlines()[-2:]
    return int(peak), package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", default="6000x4000", help="W x H of the generated JPEGs")
    parser.add_argument("--workers", type=int, default=8, help="run.workers (decode threads)")
    parser.add_argument("--code", type=Path, default=REPO, help="the xaicli checkout to run")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "xaicli-memory-bench")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    folder = args.cache / f"{args.images}x{w}x{h}"
    t0 = time.perf_counter()
    photos = make_photos(folder, args.images, (w, h))
    made = time.perf_counter() - t0
    size_mb = sum(p.stat().st_size for p in photos) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(Path(tmp) / "memory.yaml", args.workers)
        env = {**os.environ, "PYTHONPATH": str(args.code.resolve())}
        cmd = [sys.executable, "-m", "xaicli", "explain", str(folder), "-c", str(cfg),
               "-o", str(Path(tmp) / "out"), "--quiet"]
        # run in an empty folder: `python -m` puts the working directory first on sys.path, and a
        # checkout there would shadow --code
        peak, seconds, code = peak_rss_of(cmd, env, Path(tmp))
        one, package = decode_peak(photos[0], env, Path(tmp))
    if not Path(package).resolve().is_relative_to(args.code.resolve()):
        raise SystemExit(f"the child imported {package}, not the checkout {args.code}")
    print(f"images: {len(photos)} JPEGs of {w}x{h} (quality 90, {size_mb:.0f} MB in all; made in "
          f"{made:.0f}s)")
    print(f"xaicli: {args.code.resolve()}; run.workers {args.workers}; ResNet-18, Grad-CAM layer4, 224x224")
    print(f"exit code {code}; wall {seconds:.1f}s; peak RSS {peak / 2**30:.2f} GiB ({peak / 2**20:.0f} MiB)")
    print(f"decoding one photo to 224x224 adds {one / 2**20:.0f} MiB to a process's peak")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
