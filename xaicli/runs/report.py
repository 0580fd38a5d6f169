"""``OUTDIR/index.html``: read the output folder, render the page, store it atomically.

The three steps live in their own layers (:mod:`xaicli.outputs.report_data` reads,
:mod:`xaicli.render.report` renders, :mod:`xaicli.outputs.atomic` writes); this is the one place that
strings them together, for the commands that refresh the page at the end of a run and for anyone
regenerating it from an existing folder.
"""

from __future__ import annotations

from pathlib import Path

from xaicli.outputs import atomic
from xaicli.outputs.layout import INDEX_HTML, output_path
from xaicli.outputs.report_data import collect_report_data
from xaicli.render.report import report_page

__all__ = ["INDEX_HTML", "write_report"]


def write_report(outdir: Path, title: str | None = None) -> Path:
    """Write ``outdir/index.html`` from what is in ``outdir`` now; returns its path.

    The default title names the output folder (its resolved name, so ``-o .`` still reads well). The
    write is atomic: a browser refreshing the page mid-run sees the old page or the new, never half.
    """
    page = report_page(collect_report_data(outdir), title or f"xaicli report: {outdir.resolve().name}")
    path = output_path(outdir, INDEX_HTML)
    atomic.write_text(path, page)
    return path
