"""Find the images to explain, and give each one a path of its own (``rel``) that its outputs are named after.

* A folder is searched recursively for files with an image suffix (:data:`IMAGE_SUFFIXES`, any case);
  a file given explicitly is always taken, whatever its suffix, so a mislabelled file is reported rather
  than silently ignored. The same file reached twice (two inputs, a symlink) is explained once.
* Directory symbolic links are followed, each folder searched once: a link back to a folder already
  searched (a loop, or a second way to the same folder) is skipped with a notice. Real folders are
  searched before linked ones, so an image's ``rel`` goes through the real folder when there is one.
* ``exclude`` folders (the run's OUTDIR, when it sits inside an input folder) are not searched.
* ``rel`` is the image's path below its input folder (``cat/a.png``; for a file given explicitly, its
  name). With several inputs each ``rel`` starts with its input's name, and inputs with the same name
  (``A/data``, ``B/data``; ``x/a.png``, ``y/a.png``) are told apart by as many parent folders as needed.
  The same inputs give the same ``rel`` in every run, from any working directory. Two images that would
  still share an output folder (:func:`claim_outputs`) are never both written: the second one is
  recorded as failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from xaicli.engine.decode import IMAGE_EXTENSIONS
from xaicli.errors import UsageError
from xaicli.naming import safe_name

IMAGE_SUFFIXES = IMAGE_EXTENSIONS
Note = Callable[[str], None]


@dataclass(frozen=True)
class InputImage:
    path: Path  # as found (for reading and for the manifest's "image")
    rel: PurePosixPath  # its path below its input root: what its outputs are named after
    problem: str | None = None  # why it cannot be explained (recorded as its error row), e.g. a collision

    @property
    def folder_label(self) -> str | None:
        """The immediate parent folder name inside the input tree (the class, for ImageFolder layouts)."""
        return self.rel.parent.name or None

    def stat_key(self) -> str | None:
        """``<size>:<mtime_ns>`` of the file now (None when it cannot be read): a resume explains an image
        again when this changed since its rows were written."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return f"{st.st_size}:{st.st_mtime_ns}"


def true_label(item: InputImage, classes: list[str]) -> str | None:
    """The true class when the image sits in a folder named after one (ImageFolder layout), exactly or as
    its file-safe form ('T-shirt_top' for 'T-shirt/top')."""
    folder = item.folder_label
    if folder is None:
        return None
    return next((c for c in classes if folder in (c, safe_name(c))), None)


def _ignore(_text: str) -> None:
    pass


def discover_images(inputs: Sequence[str | os.PathLike], *, exclude: Sequence[str | os.PathLike] = (),
                    note: Note = _ignore) -> list[InputImage]:
    """Expand files and folders into the list of images, in a stable order (see the module docstring).

    Raises :class:`UsageError` for an input that does not exist and when no image is found at all.
    ``note`` receives one-line notices (a skipped symlink, an excluded OUTDIR).
    """
    if not inputs:
        raise UsageError("no INPUT given: pass image files and/or folders")
    roots = [Path(raw) for raw in inputs]
    for root in roots:
        if not root.exists():
            raise UsageError(f"input not found: {root}")
    skip = {_dir_id(Path(e)) for e in exclude if Path(e).is_dir()}
    labels = input_labels(roots)
    found: list[InputImage] = []
    seen: set[str] = set()
    for root, label in zip(roots, labels, strict=True):
        if root.is_dir():
            pairs = _walk(root, skip, note)
            prefix = PurePosixPath(label) if label else PurePosixPath()
            pairs = [(p, prefix / rel) for p, rel in pairs]
        else:
            pairs = [(root, PurePosixPath(label or root.name))]
        for path, rel in pairs:
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                found.append(InputImage(path, rel))
    if not found:
        raise UsageError("no images found under " + ", ".join(str(r) for r in roots)
                         + f" (image suffixes: {' '.join(sorted(IMAGE_SUFFIXES))})")
    return claim_outputs(found)


def input_labels(roots: Sequence[Path]) -> list[str | None]:
    """The prefix of each input's ``rel``: none for one folder, the file's name for one file; with several
    inputs, each input's name, extended by parent folders where two would be the same."""
    if len(roots) == 1:
        return [None if roots[0].is_dir() else roots[0].name]
    parts = [[p for p in Path(os.path.realpath(r)).parts if p != os.sep] for r in roots]
    depth = [1] * len(roots)
    for _ in range(max(len(p) for p in parts)):
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        clashes = {lab for lab in labels if labels.count(lab) > 1}
        if not clashes:
            return labels
        depth = [d + 1 if lab in clashes and d < len(p) else d
                 for lab, d, p in zip(labels, depth, parts, strict=True)]
    return ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]


def claim_outputs(items: Sequence[InputImage]) -> list[InputImage]:
    """Every image its own output folder: an image whose ``rel`` another one already has gets a
    ``problem`` (it is reported as failed, never written over the first one's outputs)."""
    owners: dict[PurePosixPath, Path] = {}
    out = []
    for it in items:
        first = owners.setdefault(it.rel, it.path)
        if first != it.path and it.problem is None:
            it = replace(it, problem=f"same output folder ({it.rel}) as {first}; rename one of them")
        out.append(it)
    return out


def _dir_id(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _walk(root: Path, skip: set[tuple[int, int]], note: Note) -> list[tuple[Path, PurePosixPath]]:
    """(path, path below ``root``) of every image file under ``root``, sorted by the latter.

    Folders reached through a symbolic link are searched after all real folders, and every folder once
    (by device and inode), so a loop ends and a real folder wins over a link to it.
    """
    visited: set[tuple[int, int]] = set()
    real_dirs: list[tuple[Path, PurePosixPath, bool]] = [(root, PurePosixPath(), False)]
    linked: list[tuple[Path, PurePosixPath, bool]] = []
    found: list[tuple[Path, PurePosixPath]] = []
    while real_dirs or linked:
        folder, rel, via_link = real_dirs.pop() if real_dirs else linked.pop(0)
        try:
            ident = _dir_id(folder)
        except OSError:
            continue
        if ident in skip:
            note(f"notice: {folder} is the output folder; it is not searched for images")
            continue
        if ident in visited:
            if via_link:
                note(f"notice: directory symlink {folder} -> {os.readlink(folder)} skipped: the folder it "
                     "leads to is already searched")
            continue
        visited.add(ident)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            note(f"notice: cannot search {folder}: {err.strerror or err}; its images are not explained")
            continue
        for entry in entries:
            path, sub = Path(entry.path), rel / entry.name
            if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                found.append((path, sub))  # a folder named like an image is listed too: reading it fails
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                continue
            if is_dir:
                link = entry.is_symlink()
                (linked if link else real_dirs).append((path, sub, link))
    return sorted(found, key=lambda pr: pr[1].as_posix())
