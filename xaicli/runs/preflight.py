"""What a command checks before it loads a model: the inputs exist and hold images, and OUTDIR can be
written. Both take milliseconds, so their errors (exit 2) come at once, not after a model load of
seconds; this module imports no torch, so the CLI calls it before importing the engine."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from xaicli.engine.discover import InputImage, discover_images
from xaicli.errors import UsageError
from xaicli.outputs.outdir import check_outdir


def _ignore(_text: str) -> None:
    pass


def prepare_inputs(inputs: Sequence[str], outdir: Path, note: Callable[[str], None] = _ignore
                   ) -> list[InputImage]:
    """The images under ``inputs`` (OUTDIR itself excluded when it lies inside an input folder), after
    checking that OUTDIR can be written. Raises :class:`~xaicli.errors.UsageError`."""
    for raw in inputs:
        if Path(raw).is_dir() and outdir.exists() and os.path.samefile(raw, outdir):
            raise UsageError(f"OUTDIR {outdir} is the input folder {raw}: its outputs would mix with the "
                             "images; give another -o")
    items = discover_images(inputs, exclude=[outdir] if outdir.is_dir() else [], note=note)
    check_outdir(outdir)
    return items
