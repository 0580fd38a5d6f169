"""The page of ``OUTDIR/index.html``: a static report of a run, opened from disk with no server and no
internet.

It lists every figure (``figures/figures.json``, ``sweep/sweep.json``) and every overlay in
``manifest.jsonl`` with its scores. Everything is in the one file: inline CSS, inline plain JavaScript
and the data as an inline JSON block; images are linked by relative paths, so the folder can be moved
or zipped as a whole.

In the page: one ``<select>`` per facet (class, method, layer, kind) filters figures and overlays;
clicking a table header sorts by that column (again: reverse). Filter and sort live in the URL hash,
e.g. ``index.html#method=gradcam&class=Bag&sort=-score``, so a view can be bookmarked. The overlay table
shows 200 rows at a time ("show more" adds more).

Self-check (used by the tests, handy after copying a report): ``index.html#check=1`` loads every image
the report references and writes the result into ``<pre id="selfcheck">`` as JSON
(``{"total": N, "loaded": N, "failed": [...]}``); ``<div id="status">`` always carries how many
figures and rows the current filter shows and whether every ``<img>`` on the page loaded.

The *class* of an overlay row is the image's true label, or its top-1 predicted class without one.

This module only turns data into text (:func:`report_page`). The data comes from the output folder
(:func:`xaicli.outputs.report_data.collect_report_data`) and :func:`xaicli.runs.report.write_report`
stores the page; keeping the page pure lets it be tested without a run. The HTML skeleton, the CSS and
the JavaScript are package data in ``xaicli/render/assets/`` (``report.html``, ``report.css``,
``report.js``), edited as what they are, not as Python strings; ``report.html`` has the placeholders
``@@TITLE@@`` (HTML-escaped), ``@@CSS@@``, ``@@JS@@`` and ``@@DATA@@`` (the JSON, made safe to sit in a
``<script>`` block).
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from importlib.resources import files
from typing import Any

_PLACEHOLDER = re.compile(r"@@(TITLE|CSS|JS|DATA)@@")


@cache
def asset(name: str) -> str:
    """The text of ``xaicli/render/assets/<name>`` (read once; present in wheels as package data)."""
    return (files("xaicli.render") / "assets" / name).read_text(encoding="utf-8")


def report_page(data: dict[str, Any], title: str) -> str:
    """The whole ``index.html`` for ``data`` (as :func:`~xaicli.outputs.report_data.collect_report_data`
    returns it) under ``title`` (plain text; it is escaped here)."""
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    blob = blob.replace("</", "<\\/").replace("<!--", "<\\!--")  # cannot end the <script> block
    parts = {"TITLE": html.escape(title), "CSS": asset("report.css"), "JS": asset("report.js"), "DATA": blob}
    # one pass: a placeholder that happens to be in the title or the data is not expanded again
    return _PLACEHOLDER.sub(lambda m: parts[m[1]], asset("report.html"))
