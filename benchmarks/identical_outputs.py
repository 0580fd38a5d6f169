"""Do two xaicli checkouts write the same outputs? (issue 15: speed-ups must not change results.)

Runs ``python -m xaicli explain`` with each checkout (``--code A --code B``, ``PYTHONPATH`` pointing at
it) on the same inputs with the same config, each into its own fresh folder, and compares:

* ``manifest.jsonl``: byte for byte;
* every ``.npy`` map: byte for byte;
* every overlay: the decoded pixels (Pillow), since the PNG encoder may differ; byte equality is
  reported too.

Two cases by default, as issue 15 asks: the bundled Fashion-MNIST sample run (``sample_images``, the demo
config) and a folder of JPEGs (640x480, quality 90, :func:`benchmarks.end_to_end.make_jpegs`) explained
by a torchvision ResNet-18 with a fixed checkpoint (Grad-CAM on ``layer4``, top-1)::

    python benchmarks/identical_outputs.py --code /path/to/main --code .
    python benchmarks/identical_outputs.py --code /path/to/main --code . --jpegs 64 --work /tmp/ident

Both processes run with the same input paths (so ``image`` and ``image_stat`` in the manifest agree)
from an empty working directory (``python -m`` puts the working directory first on ``sys.path``).
Exit status 0 when everything that must be identical is.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Comparison:
    case: str
    manifest_identical: bool = False
    rows: int = 0
    maps: int = 0
    maps_identical: int = 0
    overlays: int = 0
    overlay_pixels_identical: int = 0
    overlay_bytes_identical: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.manifest_identical and self.maps == self.maps_identical
                and self.overlays == self.overlay_pixels_identical and not self.problems)

    def line(self) -> str:
        return (f"{self.case}: manifest {'identical' if self.manifest_identical else 'DIFFERENT'} "
                f"({self.rows} rows); maps {self.maps_identical}/{self.maps} byte-identical; overlays "
                f"{self.overlay_pixels_identical}/{self.overlays} pixel-identical "
                f"({self.overlay_bytes_identical} byte-identical)"
                + "".join(f"\n  problem: {p}" for p in self.problems))


def run(code: Path, inputs: Path, config: Path | None, out: Path, cwd: Path) -> None:
    cmd = [sys.executable, "-m", "xaicli", "explain", str(inputs), "-o", str(out), "--quiet"]
    if config is not None:
        cmd += ["-c", str(config)]
    env = {**os.environ, "PYTHONPATH": str(code.resolve())}
    where = subprocess.run([sys.executable, "-c", "import xaicli; print(xaicli.__file__)"], env=env, cwd=cwd,
                           capture_output=True, text=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(code.resolve()):  # e.g. an installed copy shadows it
        raise SystemExit(f"{code}: python imports xaicli from {where!r}, not from this checkout")
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{code}: {' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")


def compare(case: str, a: Path, b: Path) -> Comparison:
    from PIL import Image

    result = Comparison(case)
    ma, mb = (a / "manifest.jsonl").read_bytes(), (b / "manifest.jsonl").read_bytes()
    result.manifest_identical = ma == mb
    rows = [json.loads(line) for line in ma.decode().splitlines() if line.strip()]
    result.rows = len(rows)
    if not result.manifest_identical:
        result.problems.append("manifest.jsonl differs")
    rows_b = [json.loads(line) for line in mb.decode().splitlines() if line.strip()]
    for ra, rb in zip(rows, rows_b, strict=False):
        if ra.get("map") and rb.get("map"):
            result.maps += 1
            result.maps_identical += (a / ra["map"]).read_bytes() == (b / rb["map"]).read_bytes()
        if ra.get("overlay") and rb.get("overlay"):
            result.overlays += 1
            da, db = (a / ra["overlay"]).read_bytes(), (b / rb["overlay"]).read_bytes()
            result.overlay_bytes_identical += da == db
            pa, pb = (np.asarray(Image.open(io.BytesIO(d)).convert("RGB")) for d in (da, db))
            result.overlay_pixels_identical += bool(np.array_equal(pa, pb))
    return result


def write_jpeg_case(work: Path, n: int) -> tuple[Path, Path]:
    """The JPEG folder, a fixed ResNet-18 checkpoint (seed 0) and its config."""
    import torch
    import torchvision
    import yaml

    sys.path.insert(0, str(REPO))
    from benchmarks.end_to_end import make_jpegs

    images = work / "jpegs"
    make_jpegs(images, n)
    ckpt = work / "resnet18_seed0.pt"
    if not ckpt.is_file():
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), ckpt)
    cfg = work / "resnet18.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"source": "torchvision", "name": "resnet18", "checkpoint": str(ckpt)},
        "preprocess": {"size": [224, 224]}, "methods": [{"name": "gradcam", "layers": ["layer4"]}],
        "targets": {"topk": 1}, "run": {"device": "cpu"}}, sort_keys=False))
    return images, cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, action="append", required=True,
                        help="an xaicli checkout (give two: the reference first)")
    parser.add_argument("--jpegs", type=int, default=256, help="JPEGs in the second case (0: skip it)")
    parser.add_argument("--work", type=Path, default=None, help="where inputs and outputs go")
    args = parser.parse_args(argv)
    if len(args.code) != 2:
        parser.error("give --code twice: the reference checkout, then the one to check")
    work = args.work or Path(tempfile.mkdtemp(prefix="xaicli-identical-"))
    work.mkdir(parents=True, exist_ok=True)
    cwd = work / "cwd"
    cwd.mkdir(exist_ok=True)
    demo = ("sample run (Fashion-MNIST demo)", REPO / "sample_images", REPO / "configs/fashion_mnist.yaml")
    cases = [demo]
    if args.jpegs:
        images, cfg = write_jpeg_case(work, args.jpegs)
        cases.append((f"{args.jpegs} JPEGs, ResNet-18 Grad-CAM", images, cfg))
    ok = True
    for i, (case, inputs, cfg) in enumerate(cases):
        outs = [work / f"case{i}_out{j}" for j in range(2)]
        for code, out in zip(args.code, outs, strict=True):
            if out.exists():
                shutil.rmtree(out)
            run(code, inputs, cfg, out, cwd)
        result = compare(case, *outs)
        ok &= result.ok
        print(result.line())
    print(f"reference {args.code[0].resolve()}, checked {args.code[1].resolve()}; outputs in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
