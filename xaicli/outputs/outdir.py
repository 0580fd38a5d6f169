"""OUTDIR before a run: checked (without writing anything into it) before the model loads, and tidied
once the run holds its lock.

:func:`check_outdir` turns every OUTDIR problem a run would otherwise hit half-way - a file where the
folder should be, no permission, a read-only file system, a ``manifest.jsonl`` that is a folder or a
symbolic link - into one :class:`~xaicli.errors.UsageError` line (exit 2) that costs no model load.
:func:`remove_stale_temporaries` deletes the temporary files of atomic writes that a killed run left.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path

from xaicli.errors import UsageError
from xaicli.outputs.layout import LOCK_FILE, MANIFEST, RUN_JSON

#: What :func:`xaicli.outputs.atomic.write_bytes` names its temporary files: ``.<name>.<8 random>.tmp``.
TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_MUST_BE_FILES = (MANIFEST, RUN_JSON, LOCK_FILE)


def check_outdir(outdir: Path) -> None:
    """Raise :class:`UsageError` unless a run can write into ``outdir`` (which need not exist yet).

    Writability is tested by creating and removing a temporary file (or, when OUTDIR does not exist, a
    temporary folder next to where it will be): permission bits alone do not tell about read-only mounts,
    immutable folders or root. Nothing is left behind.
    """
    if os.path.lexists(outdir) and not outdir.is_dir():
        raise UsageError(f"OUTDIR {outdir} exists and is not a directory; give a folder with -o")
    if outdir.is_dir():
        _probe(outdir, f"OUTDIR {outdir} is not writable")
        for name in _MUST_BE_FILES:
            path = outdir / name
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(mode):
                what = ("a directory" if stat.S_ISDIR(mode) else "a symbolic link" if stat.S_ISLNK(mode)
                        else "not a file")
                raise UsageError(f"{path} is not a regular file ({what}); move it away or use another -o")
        return
    ancestor = outdir.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"OUTDIR {outdir} cannot be created: {ancestor} is not a directory")
    _probe(ancestor, f"OUTDIR {outdir} cannot be created in {ancestor}", folder=True)


def _probe(where: Path, problem: str, *, folder: bool = False) -> None:
    """Create and remove a temporary file (``folder``: a temporary folder) in ``where``."""
    try:
        if folder:
            os.rmdir(tempfile.mkdtemp(prefix=".xaicli-probe-", dir=where))
        else:
            fd, name = tempfile.mkstemp(prefix=".xaicli-probe-", dir=where)
            os.close(fd)
            os.unlink(name)
    except OSError as err:
        raise UsageError(f"{problem}: {err.strerror or err}") from err


def remove_stale_temporaries(outdir: Path) -> int:
    """Delete the temporary files (``.<name>.<random>.tmp``) that a killed run's atomic writes left
    anywhere in ``outdir``; call it while holding OUTDIR's lock (no other run is writing). Returns how
    many were removed. Symbolic links to folders are not followed."""
    removed = 0
    for folder, _dirs, files in os.walk(outdir):
        for name in files:
            if TEMPORARY.match(name):
                path = Path(folder) / name
                if path.is_file() and not path.is_symlink():
                    path.unlink(missing_ok=True)
                    removed += 1
    return removed
