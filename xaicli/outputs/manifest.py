"""``manifest.jsonl``: one JSON object per explanation (or per failed image), appended as batches finish.

Rows are appended only after the files they point to are on disk, so every row is backed by its files,
and a run killed at any point resumes from the rows that made it. A torn last line (killed mid-write)
is ignored on reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def row_key(row: dict[str, Any]) -> tuple:
    """What identifies one explanation across runs (used to skip work on resume)."""
    return (row["image"], row["method"], row.get("layer"), row.get("slot"))


def read_manifest(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # torn line from an interrupted run: that explanation will be redone
    return rows


class ManifestWriter:
    """Appends rows; ``flush`` after each batch makes them durable."""

    def __init__(self, path: Path, fresh: bool):
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            path.unlink(missing_ok=True)
        elif path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            with path.open("ab") as f:  # terminate a torn line so the next row starts cleanly
                f.write(b"\n")
        self._f = path.open("a", encoding="utf-8")

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
