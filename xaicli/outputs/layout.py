"""Where each output goes, and the one function every output path is built with.

Overlays and maps mirror the input tree, one folder per input image, named after the image *with* its
extension (so ``a.png`` and ``a.jpg`` never share outputs)::

    OUTDIR/<image path relative to its input root>/<method>/<layer>/<slot>_<class>.png|.npy

e.g. ``Sneaker/img_0001.png/gradcam/features.1.bn/top1_Sneaker.png``. Pixel methods that explain the
input itself use the layer folder ``input``; explicit class targets are named ``class<idx>_<name>``, the
true class ``true_<name>``. With ``output.names: slot`` the class is left out (``top1.png``,
``class7.png``, ``true.png``), so the file names do not change when a prediction does. The folders
depend only on the image's path below its input root (and, with several inputs, the input's own name):
the same images give the same folders in every run.

:func:`output_path` is the only way a path inside OUTDIR is made: it escapes each component
(:func:`escape_component`) and checks that the folder it lands in resolves inside OUTDIR, so neither a
hostile file name (``..png``, ``...png``, a name with a newline) nor a symbolic link planted inside
OUTDIR can make xaicli write anywhere else.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path, PurePosixPath

from xaicli.errors import XaicliError
from xaicli.naming import safe_name

MANIFEST = "manifest.jsonl"
RUN_JSON = "run.json"
ERROR_LOG = "xaicli-error.log"
LOCK_FILE = ".xaicli.lock"
INDEX_HTML = "index.html"
FIGURES_DIR = "figures"
COMPARE_DIR = "compare"
SWEEP_DIR = "sweep"

#: Top-level names of OUTDIR that belong to the run, never to an input image's outputs.
RESERVED_NAMES = frozenset({MANIFEST, RUN_JSON, ERROR_LOG, LOCK_FILE, INDEX_HTML, FIGURES_DIR, COMPARE_DIR,
                            SWEEP_DIR})
_RESERVED_PATTERN = re.compile(r"^(manifest\.rank\d+\.jsonl|run\.rank\d+\.json)$")  # torchrun shards
#: What must be escaped inside one path component: '%' (the escape character itself, so the escaping
#: is injective), '/' and NUL (not allowed in a name), control characters (they forge terminal lines).
_ESCAPED = re.compile(r"[%/\x00-\x1f\x7f]")

__all__ = ["COMPARE_DIR", "ERROR_LOG", "FIGURES_DIR", "INDEX_HTML", "LOCK_FILE", "MANIFEST", "RUN_JSON",
           "SWEEP_DIR", "OutsideOutdirError", "escape_component", "output_path", "output_stem", "safe_name",
           "target_stem"]


class OutsideOutdirError(XaicliError):
    """An output path would leave OUTDIR (through a symbolic link inside it). Recorded for the image whose
    outputs it is; never followed."""


def escape_component(name: str) -> str:
    """One path component made safe and unambiguous, by percent-escaping (``%XX``) '%', '/', NUL and
    control characters, and the whole of ``.`` and ``..`` (``%2E``, ``%2E%2E``), which are path steps,
    not names. Injective: two different names never give the same component. ``..png`` and ``...png``
    are ordinary names and stay as they are."""
    if name in (".", ".."):
        return "%2E" * len(name)
    if not name:
        raise ValueError("empty path component")
    return _ESCAPED.sub(lambda m: f"%{ord(m.group()):02X}", name)


def target_stem(slot: str, target_name: str | None) -> str:
    """``top1_Bag`` (slot and class) or, with ``target_name`` None (``output.names: slot``), ``top1``."""
    return slot if target_name is None else f"{slot}_{safe_name(target_name)}"


def output_stem(rel_image: PurePosixPath | str, method: str, layer: str | None, slot: str,
                target_name: str | None) -> PurePosixPath:
    """Relative path (no suffix) of one explanation's overlay / map: the image's own folder (its path
    below the input root, extension included), then method, layer and target (:func:`target_stem`)."""
    return (PurePosixPath(rel_image) / method / safe_name(layer or "input")
            / target_stem(slot, target_name))


def image_parts(rel: PurePosixPath | str) -> list[str]:
    """The escaped components of an input image's relative path, as its output folder. A first component
    that is one of OUTDIR's own names (``figures``, ``manifest.jsonl``, ...) gets its first character
    escaped, so an input folder called ``figures`` cannot collide with the figures."""
    parts = [escape_component(p) for p in PurePosixPath(rel).parts if p != "/"]
    if parts and (parts[0] in RESERVED_NAMES or _RESERVED_PATTERN.match(parts[0])):
        parts[0] = f"%{ord(parts[0][0]):02X}{parts[0][1:]}"
    return parts


_checked: set[tuple[str, str]] = set()  # (real OUTDIR, folder) pairs already found inside
_checked_lock = threading.Lock()


def output_path(outdir: Path, rel: PurePosixPath | str, *, image_outputs: bool = False) -> Path:
    """``outdir / rel`` with every component escaped, after checking that the folder it lands in resolves
    inside OUTDIR (symbolic links included). ``image_outputs``: ``rel`` starts with an input image's path
    (see :func:`image_parts`), not with one of OUTDIR's own names. Raises :class:`OutsideOutdirError`.

    The final component itself is not resolved: files are replaced by rename (a symbolic link there is
    replaced, not followed) and the manifest is opened with ``O_NOFOLLOW``.
    """
    parts = image_parts(rel) if image_outputs else [escape_component(p) for p in PurePosixPath(rel).parts
                                                    if p != "/"]
    if not parts:
        raise ValueError(f"empty output path {str(rel)!r}")
    path = outdir.joinpath(*parts)
    real_out = os.path.realpath(outdir)
    folder = str(path.parent)
    key = (real_out, folder)
    if key in _checked:
        return path
    real = os.path.realpath(folder)
    if real != real_out and not real.startswith(real_out.rstrip(os.sep) + os.sep):
        raise OutsideOutdirError(f"output path {str(rel)!r} is outside OUTDIR: {_escape_route(outdir, parts)}"
                                 f" leads to {real}")
    with _checked_lock:
        if len(_checked) > 100_000:
            _checked.clear()
        _checked.add(key)
    return path


def _escape_route(outdir: Path, parts: list[str]) -> str:
    """The symbolic link inside OUTDIR that leads out of it, for the error message."""
    here = outdir
    for part in parts[:-1]:
        here = here / part
        if here.is_symlink():
            return f"the symbolic link {here}"
    return str(outdir.joinpath(*parts))
