"""The CLI's one error mapper: every command runs inside :func:`mapped_errors`.

* :class:`~xaicli.errors.UsageError` -> ``error: <one line>``, exit 2 (nothing was run);
* Ctrl-C or SIGTERM -> ``interrupted``, exit 130 or 143 (128 + the signal; the run wrote what it
  finished, committed or rolled back the batch in flight, and run.json says ``interrupted``);
* anything else - also a model that calls ``sys.exit()`` mid-run - -> ``error: the run failed: <type>:
  <message>`` and the path of a log file holding the traceback (``OUTDIR/xaicli-error.log``, or a file
  in the temporary folder when there is no OUTDIR), exit 4. ``--debug`` prints the traceback too.

With ``--json``, every one of these also prints a JSON object on stdout (``{"exit_code": 2, "error":
"..."}``), so a script always gets JSON; a successful run prints its summary there instead.

A script therefore never has to read a traceback to know what happened: the exit code says which kind
of failure it was and the last line of stderr says why. Names inside messages are printed with control
characters escaped (:func:`xaicli.naming.printable`), so a file name cannot forge another line.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from xaicli.errors import ExitCode, UsageError
from xaicli.naming import printable
from xaicli.outputs.interrupts import Interrupted, signals_as_interrupts
from xaicli.outputs.layout import ERROR_LOG

DebugOpt = Annotated[bool, typer.Option("--debug", help="On an unexpected failure, print the traceback "
                                        "(it is always written to OUTDIR/xaicli-error.log).")]

MESSAGE_LIMIT = 500


def one_line(message: object, limit: int | None = None) -> str:
    """Any message as one printable line (a multi-line message cannot be mistaken for several), cut at a
    word boundary when ``limit`` is given and exceeded."""
    text = printable("; ".join(ln.strip() for ln in str(message).splitlines() if ln.strip()))
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - 3].rsplit(" ", 1)[0].rstrip(" ,;:") + "..."


def json_error(code: int, message: str, status: str) -> None:
    """The ``--json`` answer of a command that did not produce its summary."""
    typer.echo(json.dumps({"exit_code": int(code), "status": status, "error": message}))


def fail_usage(message: object, json_out: bool = False) -> NoReturn:
    line = one_line(message)
    typer.echo(f"error: {line}", err=True)
    if json_out:
        json_error(ExitCode.USAGE, line, "usage error")
    raise typer.Exit(ExitCode.USAGE)


def write_error_log(outdir: Path | None, text: str) -> Path | None:
    """Store ``text`` (a traceback) in ``OUTDIR/xaicli-error.log``, else in the temporary folder. The log
    is appended to without following a symbolic link (it stays inside OUTDIR)."""
    header = f"xaicli {time.strftime('%Y-%m-%dT%H:%M:%S%z')} pid {os.getpid()}: {' '.join(sys.argv)}\n"
    candidates = [outdir / ERROR_LOG] if outdir is not None and outdir.is_dir() else []
    candidates.append(Path(tempfile.gettempdir()) / f"xaicli-error-{os.getpid()}.log")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    for path in candidates:
        try:
            fd = os.open(path, flags, 0o666)
            with os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace") as f:
                f.write(header + text + "\n")
            return path
        except OSError:
            continue
    return None


@contextmanager
def mapped_errors(outdir: Path | None = None, debug: bool = False, json_out: bool = False) -> Iterator[None]:
    """Map what escapes a command to one stderr line and an exit code (see the module docstring); SIGINT
    and SIGTERM are turned into interrupts for the duration (:mod:`xaicli.outputs.interrupts`)."""
    try:
        with signals_as_interrupts():
            yield
    except (typer.Exit, typer.Abort):
        raise
    except UsageError as err:
        fail_usage(err, json_out)
    except KeyboardInterrupt as err:
        code = err.exit_code if isinstance(err, Interrupted) else 130
        typer.echo("interrupted", err=True)
        if json_out:
            json_error(code, "interrupted", "interrupted")
        raise typer.Exit(code) from None
    except (Exception, SystemExit) as err:  # the one place an unexpected error is turned into exit code 4
        text = traceback.format_exc()
        log = write_error_log(outdir, text)
        if debug:
            typer.echo(text.rstrip(), err=True)
        where = f" (traceback in {printable(log)})" if log is not None else ""
        line = f"the run failed: {type(err).__name__}: {one_line(_describe(err), MESSAGE_LIMIT)}"
        typer.echo(f"error: {line}{where}", err=True)
        if json_out:
            json_error(ExitCode.RUN_FAILED, line, "failed")
        raise typer.Exit(ExitCode.RUN_FAILED) from None


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _describe(err: BaseException) -> str:
    if isinstance(err, SystemExit):
        return f"the model's code called exit({err.code!r}) during the run"
    if isinstance(err, OSError) and err.errno in _FULL:
        return f"{err}; make room and rerun the same command: it resumes where this run stopped"
    return str(err)
