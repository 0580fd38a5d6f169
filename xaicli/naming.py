"""Names that are safe where they go: file-name-safe class and layer names (shared by the output layout
and the matching of class folders to class names: 'T-shirt/top' is stored in a folder 'T-shirt_top'), and
text that is safe on a terminal line (a file name cannot forge another line of output)."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
#: C0 and C1 control characters, DEL, and the Unicode line/paragraph separators a terminal may honour.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def safe_name(text: str) -> str:
    """A file-name-safe version of a class or layer name ('T-shirt/top' -> 'T-shirt_top')."""
    return _UNSAFE.sub("_", text).strip("_") or "_"


def printable(text: object) -> str:
    """``text`` with control characters escaped as Python does (``\\n``, ``\\x1b``, ``\\u2028``), so that
    a value printed inside a line - a file name in ``failed: <path>: ...`` - stays on that one line and
    cannot move the cursor or colour the terminal. Everything else is kept as it is."""

    def escape(match: re.Match[str]) -> str:
        ch = match.group()
        return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")

    return _CONTROL.sub(escape, str(text))
