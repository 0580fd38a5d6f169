"""File-name-safe names, shared by the output layout and the matching of class folders to class names
('T-shirt/top' is stored in a folder 'T-shirt_top')."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(text: str) -> str:
    """A file-name-safe version of a class or layer name ('T-shirt/top' -> 'T-shirt_top')."""
    return _UNSAFE.sub("_", text).strip("_") or "_"
