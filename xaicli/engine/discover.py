"""Find the images to explain. Folders are searched recursively; outputs mirror the tree below each
input folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from xaicli.errors import UsageError
from xaicli.naming import safe_name

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class InputImage:
    path: Path  # as found (for reading and for the manifest)
    rel: PurePosixPath  # where its outputs go, relative to OUTDIR

    @property
    def folder_label(self) -> str | None:
        """The immediate parent folder name inside the input tree (the class, for ImageFolder layouts)."""
        return self.rel.parent.name or None


def true_label(item: InputImage, classes: list[str]) -> str | None:
    """The true class when the image sits in a folder named after one (ImageFolder layout), exactly or as
    its file-safe form ('T-shirt_top' for 'T-shirt/top')."""
    folder = item.folder_label
    if folder is None:
        return None
    return next((c for c in classes if folder in (c, safe_name(c))), None)


def discover_images(inputs: Sequence[str | os.PathLike]) -> list[InputImage]:
    """Expand files and folders into a sorted, de-duplicated list.

    A folder contributes every file with an image suffix below it (case-insensitive); a file given
    explicitly is always taken, whatever its suffix, so a mislabelled file is reported rather than
    silently ignored. With several inputs, output paths are prefixed by each input's own name to
    keep them apart.
    """
    if not inputs:
        raise UsageError("no INPUT given: pass image files and/or folders")
    found: list[InputImage] = []
    seen: set[Path] = set()
    several = len(inputs) > 1
    for raw in inputs:
        root = Path(raw)
        if not root.exists():
            raise UsageError(f"input not found: {root}")
        if root.is_dir():
            # a folder named like an image ("x.png/") is listed too: reading it fails and it is reported
            files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            for p in files:
                rel = p.relative_to(root)
                if several:
                    rel = Path(root.resolve().name) / rel
                if p.resolve() not in seen:
                    seen.add(p.resolve())
                    found.append(InputImage(p, PurePosixPath(rel.as_posix())))
        elif root.resolve() not in seen:
            seen.add(root.resolve())
            found.append(InputImage(root, PurePosixPath(root.name)))
    return found
