"""The labelled (true) class of each image: a row of a labels CSV, else the image's class folder.

Two sources, the first that knows an image wins:

1. ``targets.labels``: a CSV file with a header row naming the columns ``image`` and ``label`` (others
   are ignored). ``image`` is the image's path relative to its input folder - the manifest's ``rel``,
   e.g. ``Bag/img_00030.png`` - and ``label`` a class name or, when no class has that name, a class
   index. Every label is checked against the model's classes when the run is planned: an unknown one
   stops the run (exit 2) naming the file, its row and the closest class names.
2. The folder the image sits in, when it names a class (ImageFolder layout; also the file-safe form,
   ``T-shirt_top`` for ``T-shirt/top``): :func:`xaicli.engine.discover.true_label`.

An image neither knows has no label (None): it gets no ``true`` map, and counts as unlabelled for the
accuracy. :attr:`ImageLabels.identity` says what the labels depend on, for the run's fingerprint: a
changed labels file is a different run.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import torch
from torch import Tensor

from xaicli.engine.discover import InputImage, true_label
from xaicli.errors import ConfigError, format_choices

KEY = "targets.labels"


class ImageLabels:
    """Class index of each image's label, or None (see the module docstring)."""

    def __init__(self, classes: Sequence[str], rows: dict[str, int] | None = None, digest: str | None = None):
        self.classes = list(classes)
        self.rows = dict(rows or {})  # rel -> class index, from the labels file
        self.digest = digest  # sha256 of the labels file's bytes, None without one

    @classmethod
    def from_file(cls, path: Path | None, classes: Sequence[str]) -> ImageLabels:
        """The labels of ``path`` (a CSV file, see the module docstring) with folder names as the fallback;
        ``None``: folder names only. Raises :class:`~xaicli.errors.ConfigError` (exit 2) for an unreadable
        file, a missing column, an unknown class or an image listed twice with different labels."""
        if path is None:
            return cls(classes)
        try:
            data = path.read_bytes()
            text = data.decode("utf-8-sig")  # a byte-order mark (spreadsheet exports) is not a column name
        except OSError as err:
            raise ConfigError(KEY, f"cannot read {path}: {err.strerror or err}") from err
        except UnicodeDecodeError as err:
            raise ConfigError(KEY, f"{path} is not UTF-8 text: {err.reason} at byte {err.start}") from err
        return cls(classes, parse_labels(text, path, classes), "sha256:" + hashlib.sha256(data).hexdigest())

    @property
    def identity(self) -> str:
        """What the labels are, for the run's fingerprint: the labels file's digest, or folder names."""
        return f"labels {self.digest}" if self.digest else "labels from folder names"

    def index(self, item: InputImage) -> int | None:
        found = self.rows.get(item.rel.as_posix())
        if found is not None:
            return found
        name = true_label(item, self.classes)
        return None if name is None else self.classes.index(name)

    def name(self, item: InputImage) -> str | None:
        i = self.index(item)
        return None if i is None else self.classes[i]

    def tensor(self, items: Sequence[InputImage]) -> Tensor:
        """(B,) long: each item's label index, -1 where none is known."""
        return torch.tensor([-1 if (i := self.index(it)) is None else i for it in items], dtype=torch.long)


def parse_labels(text: str, path: Path, classes: Sequence[str]) -> dict[str, int]:
    """``rel -> class index`` of a labels CSV (see the module docstring); rows are numbered as a
    spreadsheet shows them (the header is row 1)."""
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    names = [h.strip().lower() for h in header or []]
    if "image" not in names or "label" not in names:
        raise ConfigError(KEY, f"{path}: the first row must name the columns image,label (got "
                          f"{','.join(header or []) or 'an empty file'!r})")
    col_image, col_label = names.index("image"), names.index("label")
    index_of = {c: i for i, c in enumerate(classes)}
    out: dict[str, int] = {}
    for row_number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(col_image, col_label):
            raise ConfigError(KEY, f"{path} row {row_number}: expected the columns image,label, got "
                              f"{','.join(row)!r}")
        image, label = row[col_image].strip(), row[col_label].strip()
        rel = PurePosixPath(image.replace("\\", "/")).as_posix()  # 'Bag//a.png', './Bag/a.png' -> 'Bag/a.png'
        if label in index_of:
            cls = index_of[label]
        elif label.isdigit() and int(label) < len(classes):
            cls = int(label)
        else:
            what = (f"class index {label} out of range 0..{len(classes) - 1}" if label.isdigit()
                    else f"unknown class {label!r}; {format_choices(label, classes)}")
            raise ConfigError(KEY, f"{path} row {row_number} (image {image!r}): {what}")
        if rel in out and out[rel] != cls:
            raise ConfigError(KEY, f"{path} row {row_number}: image {image!r} is listed again with another "
                              f"label ({classes[cls]!r}, before {classes[out[rel]]!r}); list each image once")
        out[rel] = cls
    return out
