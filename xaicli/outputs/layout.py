"""Where each output goes. Overlays and maps mirror the input tree:

    OUTDIR/<input path relative to its root, without suffix>/<method>/<layer>/<rank>_<class>.png|.npy

e.g. ``Sneaker/img_0001/gradcam/features.1.bn/top1_Sneaker.png``. Pixel methods that explain the
input itself use the layer folder ``input``; explicit class targets are named ``class<idx>_<name>``.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from xaicli.naming import safe_name

MANIFEST = "manifest.jsonl"
RUN_JSON = "run.json"
ERROR_LOG = "xaicli-error.log"

__all__ = ["ERROR_LOG", "MANIFEST", "RUN_JSON", "output_stem", "safe_name", "target_stem"]


def target_stem(rank: int | None, target: int, target_name: str) -> str:
    prefix = f"top{rank}" if rank is not None else f"class{target}"
    return f"{prefix}_{safe_name(target_name)}"


def output_stem(rel_image: PurePosixPath, method: str, layer: str | None, rank: int | None, target: int,
                target_name: str) -> PurePosixPath:
    """Relative path (no suffix) of one explanation's overlay / map."""
    return (rel_image.with_suffix("") / method / safe_name(layer or "input")
            / target_stem(rank, target, target_name))
