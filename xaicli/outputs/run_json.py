"""``run.json``: what the last run was (resolved config, versions, device, summary, ``status``) and the
``history`` of every run that wrote the folder, each with its identity and fingerprints
(:mod:`xaicli.outputs.fingerprint`).

It is written when a run starts (``status: running``) and again when it ends (``complete``,
``interrupted`` or ``failed``), so a folder never claims a run is complete while another one was killed
half-way through it: a ``running`` entry found by the next run (which holds the lock, so nobody else is
running) is recorded as ``killed``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xaicli.outputs import atomic
from xaicli.outputs.layout import RUN_JSON, output_path

HISTORY_LIMIT = 100
"""Entries kept in ``history`` (the oldest are dropped)."""


def read_run_json(outdir: Path, name: str = RUN_JSON) -> dict[str, Any] | None:
    """The run.json in ``outdir`` as a dict; None when there is none or it cannot be read as JSON."""
    try:
        data = json.loads((outdir / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def previous_history(outdir: Path, name: str = RUN_JSON) -> list[dict[str, Any]]:
    """The history of the runs that wrote ``outdir``; an entry still ``running`` is marked ``killed``
    (call this while holding OUTDIR's lock)."""
    data = read_run_json(outdir, name)
    history = data.get("history") if data else None
    if not isinstance(history, list):
        return []
    history = [h for h in history if isinstance(h, dict)]
    for entry in history:
        if entry.get("status") == "running":
            entry["status"] = "killed"
    return history[-(HISTORY_LIMIT - 1):]


def write_run_json(outdir: Path, info: dict[str, Any], name: str = RUN_JSON) -> None:
    """Store ``info`` as ``outdir/name`` (atomically, strict JSON)."""
    atomic.write_json(output_path(outdir, name), info)
