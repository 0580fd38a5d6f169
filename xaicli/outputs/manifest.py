"""``manifest.jsonl``: one JSON object per explanation (or per failed image), appended as batches finish.

Guarantees (the README's "Guarantees" section relies on them):

* **Backed by files.** Rows are appended only after the files they point to are on disk, so every row is
  backed by its files, and a run killed at any point resumes from the rows that made it.
* **Strict JSON.** Every line is one JSON object that any JSON reader accepts: no ``NaN``/``Infinity``
  tokens (a non-finite number becomes ``null`` and the row gets a ``warning``), and a name that is not
  valid UTF-8 is written with ``\\u`` escapes instead of raw bytes.
* **Whole lines.** A batch of rows is appended with one ``write`` of whole lines; if the write fails
  (disk full) the file is truncated back to where it was, so no torn line is left. A torn last line from
  a killed process is cut off before the next run appends (:func:`tidy_manifest`), and that explanation
  is redone.

:class:`ManifestRow` is the one definition of a row and :meth:`ManifestRow.to_json` its one serialiser;
the field order below is the order in the file (a stable contract for people reading it with ``jq``).
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xaicli.outputs import atomic

RowKey = tuple[str, str | None, str | None, str | None]


@dataclass
class ManifestRow:
    """One explanation (``status`` "ok") or one image that failed (``status`` "error").

    ``image``: the path as given on the command line (relative to where xaicli ran); ``rel``: the image's
    path below its input root, the same from any working directory - what its outputs are named after
    and what a resume matches on; ``score``: the softmax probability of ``target``; ``label``: the true
    class (a row of ``targets.labels``, else the image's folder when it names a class); ``predicted``:
    the image's top-1 class (whatever the row's target); ``overlay``/``map``: paths relative to OUTDIR;
    ``fingerprint``: what produced the map (:mod:`xaicli.outputs.fingerprint`); ``image_stat``: the input
    file's size and modification time when it was explained (a changed file is explained again);
    ``warning``: something to know about this row (e.g. a map with non-finite values); ``extras``:
    per-map diagnostics of the method (e.g. ``ig_delta``), written after the fixed fields.
    """

    image: str
    rel: str | None = None
    status: Literal["ok", "error"] = "ok"
    method: str | None = None
    layer: str | None = None
    slot: str | None = None
    target: int | None = None
    target_name: str | None = None
    rank: int | None = None
    score: float | None = None
    label: str | None = None
    predicted: str | None = None
    overlay: str | None = None
    map: str | None = None
    fingerprint: str | None = None
    image_stat: str | None = None
    error: str | None = None
    warning: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, image: str, error: str, rel: str | None = None) -> ManifestRow:
        return cls(image=image, rel=rel, status="error", error=error)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def key(self) -> RowKey:
        """What identifies one explanation across runs (used to skip work on resume): the image by its
        path below its input root (:attr:`rel`), method, layer and target slot."""
        return (self.rel if self.rel is not None else self.image, self.method, self.layer, self.slot)

    def to_dict(self) -> dict[str, Any]:
        warnings = [self.warning] if self.warning else []
        score = _finite(self.score)
        if self.score is not None and score is None:
            warnings.append("score is not finite")
        extras = {k: _finite(v) for k, v in self.extras.items()}
        bad = [k for k, v in self.extras.items() if v is not None and extras[k] is None]
        if bad:
            warnings.append(f"non-finite {', '.join(bad)}")
        common = {"method": self.method, "layer": self.layer, "slot": self.slot, "target": self.target,
                  "target_name": self.target_name, "rank": self.rank, "score": score}
        head = {"image": self.image, "rel": self.rel, "status": self.status}
        if self.ok:
            row = {**head, **common, "label": self.label, "predicted": self.predicted,
                   "overlay": self.overlay, "map": self.map,
                   "fingerprint": self.fingerprint, "image_stat": self.image_stat}
        else:
            row = {**head, "error": self.error, **common, "overlay": self.overlay, "map": self.map}
        if warnings:
            row["warning"] = "; ".join(warnings)
        return {**row, **extras}

    def to_json(self) -> str:
        """The row as one line of the manifest (no newline): strict JSON, UTF-8 encodable."""
        data = self.to_dict()
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a file name that is not UTF-8 (lone surrogates): escape, don't fail
            text = json.dumps(data, ensure_ascii=True, allow_nan=False)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestRow:
        known = {f for f in cls.__dataclass_fields__ if f != "extras"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extras={k: v for k, v in data.items() if k not in known})


def _finite(value: Any) -> Any:
    """``value``, or None for a float that is NaN or infinite (strict JSON has no token for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class ManifestScan:
    """A manifest as read: the rows that parse, and how many lines did not (torn or foreign)."""

    rows: list[dict[str, Any]]
    invalid_lines: int = 0
    torn_tail: bool = False  # the file does not end with a newline


def scan_manifest(path: Path) -> ManifestScan:
    """Read a manifest, keeping the lines that are JSON objects and counting the others."""
    if not path.is_file():
        return ManifestScan([])
    data = path.read_bytes()
    scan = ManifestScan([], torn_tail=bool(data) and not data.endswith(b"\n"))
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            scan.invalid_lines += 1
            continue
        if isinstance(row, dict):
            scan.rows.append(row)
        else:
            scan.invalid_lines += 1
    return scan


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """The rows of a manifest as plain dicts (what ``json.loads`` gives), skipping lines that do not
    parse (a torn line from a killed run is redone by the next run)."""
    return scan_manifest(path).rows


def read_rows(path: Path) -> list[ManifestRow]:
    """The rows of a manifest as :class:`ManifestRow`."""
    return [ManifestRow.from_dict(r) for r in read_manifest(path)]


def tidy_manifest(path: Path, drop: Callable[[ManifestRow], bool]) -> int:
    """Before a run appends: rewrite the manifest (atomically) without the rows ``drop`` selects, without
    lines that do not parse and without a torn last line; left untouched when there is nothing to remove.
    Returns how many rows or lines were removed."""
    scan = scan_manifest(path)
    rows = [ManifestRow.from_dict(r) for r in scan.rows]
    kept = [r for r in rows if not drop(r)]
    removed = len(rows) - len(kept) + scan.invalid_lines
    if removed or scan.torn_tail:
        atomic.write_text(path, "".join(r.to_json() + "\n" for r in kept))
    return removed


class ManifestWriter:
    """Appends batches of rows; each :meth:`write` is one ``write`` of whole lines, synced, and rolled
    back (truncated) if it fails, so the file only ever holds whole rows.

    The file is opened with ``O_NOFOLLOW``: a symbolic link planted as ``manifest.jsonl`` is refused, not
    followed out of OUTDIR.
    """

    def __init__(self, path: Path, fresh: bool):
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_CLOEXEC", 0))
        self._fd = os.open(path, flags | (os.O_TRUNC if fresh else 0), 0o666)
        self.path = path
        try:
            if not stat.S_ISREG(os.fstat(self._fd).st_mode):
                raise IsADirectoryError(f"{path} is not a regular file")
            self._cut_torn_tail()
        except BaseException:
            os.close(self._fd)
            raise

    def _cut_torn_tail(self) -> None:
        """A last line without its newline (a killed writer) is cut off; its explanation is redone."""
        size = os.fstat(self._fd).st_size
        if not size:
            return
        with open(self.path, "rb") as f:
            f.seek(max(0, size - (1 << 20)))
            tail = f.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        os.ftruncate(self._fd, size - len(tail) + cut + 1 if cut >= 0 else max(0, size - len(tail)))

    def write(self, rows: Iterable[ManifestRow]) -> None:
        data = "".join(row.to_json() + "\n" for row in rows).encode("utf-8")
        if not data:
            return
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except BaseException:
            os.ftruncate(self._fd, start)  # no torn line: the batch is all there or not at all
            raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
