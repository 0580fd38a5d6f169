"""What a command checks before it loads a model: the inputs exist and hold images, and OUTDIR can be
written. Both take milliseconds, so their errors (exit 2) come at once, not after a model load of
seconds; this module imports no torch, so the CLI calls it before importing the engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from xaicli.engine.discover import InputImage, discover_images
from xaicli.outputs.outdir import check_outdir


def _ignore(_text: str) -> None:
    pass


def prepare_inputs(inputs: Sequence[str], outdir: Path, note: Callable[[str], None] = _ignore
                   ) -> list[InputImage]:
    """The images under ``inputs`` (OUTDIR itself excluded when it lies inside an input folder), after
    checking that OUTDIR can be written. Raises :class:`~xaicli.errors.UsageError`."""
    items = discover_images(inputs, exclude=[outdir] if outdir.is_dir() else [], note=note)
    check_outdir(outdir)
    return items
