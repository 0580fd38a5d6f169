"""``manifest.jsonl``: one JSON object per explanation (or per failed image), appended as batches finish.

Rows are appended only after the files they point to are on disk, so every row is backed by its files,
and a run killed at any point resumes from the rows that made it. A torn last line (killed mid-write)
is ignored on reading.

:class:`ManifestRow` is the one definition of a row and :meth:`ManifestRow.to_json` its one serialiser;
the field order below is the order in the file (a stable contract for people reading it with ``jq``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

RowKey = tuple[str, str | None, str | None, str | None]


@dataclass
class ManifestRow:
    """One explanation (``status`` "ok") or one image that failed (``status`` "error").

    ``score`` is the softmax probability of ``target``; ``label`` the true class when the image's folder
    names one; ``overlay``/``map`` paths relative to OUTDIR; ``extras`` per-map diagnostics of the method
    (e.g. ``ig_delta``), written after the fixed fields.
    """

    image: str
    status: Literal["ok", "error"] = "ok"
    method: str | None = None
    layer: str | None = None
    slot: str | None = None
    target: int | None = None
    target_name: str | None = None
    rank: int | None = None
    score: float | None = None
    label: str | None = None
    overlay: str | None = None
    map: str | None = None
    error: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, image: str, error: str) -> ManifestRow:
        return cls(image=image, status="error", error=error)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def key(self) -> RowKey:
        """What identifies one explanation across runs (used to skip work on resume)."""
        return (self.image, self.method, self.layer, self.slot)

    def to_dict(self) -> dict[str, Any]:
        common = {"method": self.method, "layer": self.layer, "slot": self.slot, "target": self.target,
                  "target_name": self.target_name, "rank": self.rank, "score": self.score}
        if self.ok:
            return {"image": self.image, "status": "ok", **common, "label": self.label,
                    "overlay": self.overlay, "map": self.map, **self.extras}
        return {"image": self.image, "status": "error", "error": self.error, **common,
                "overlay": self.overlay, "map": self.map}

    def to_json(self) -> str:
        """The row as one line of the manifest (no newline)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestRow:
        known = {f for f in cls.__dataclass_fields__ if f != "extras"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extras={k: v for k, v in data.items() if k not in known})


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """The rows of a manifest as plain dicts (what ``json.loads`` gives), skipping a torn line."""
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


def read_rows(path: Path) -> list[ManifestRow]:
    """The rows of a manifest as :class:`ManifestRow`."""
    return [ManifestRow.from_dict(r) for r in read_manifest(path)]


class ManifestWriter:
    """Appends rows; each :meth:`write` is flushed and synced, so rows are durable once it returns."""

    def __init__(self, path: Path, fresh: bool):
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            path.unlink(missing_ok=True)
        elif path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            with path.open("ab") as f:  # terminate a torn line so the next row starts cleanly
                f.write(b"\n")
        self._f = path.open("a", encoding="utf-8")

    def write(self, rows: Iterable[ManifestRow]) -> None:
        for row in rows:
            self._f.write(row.to_json() + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
