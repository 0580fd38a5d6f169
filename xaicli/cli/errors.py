"""The CLI's one error mapper: every command runs inside :func:`mapped_errors`.

* :class:`~xaicli.errors.UsageError` -> ``error: <one line>``, exit 2 (nothing was run);
* Ctrl-C -> ``interrupted``, exit 130 (the run wrote what it finished and run.json says so);
* anything else -> ``error: the run failed: <type>: <message>`` and the path of a log file holding the
  traceback (``OUTDIR/xaicli-error.log``, or a file in the temporary folder when there is no OUTDIR),
  exit 4. ``--debug`` prints the traceback too.

A script therefore never has to read a traceback to know what happened: the exit code says which kind
of failure it was and the last line of stderr says why.
"""

from __future__ import annotations

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
from xaicli.outputs.layout import ERROR_LOG

DebugOpt = Annotated[bool, typer.Option("--debug", help="On an unexpected failure, print the traceback "
                                        "(it is always written to OUTDIR/xaicli-error.log).")]


def one_line(message: object) -> str:
    """Any message as one line (a multi-line message cannot be mistaken for several)."""
    return "; ".join(ln.strip() for ln in str(message).splitlines() if ln.strip())


def fail_usage(message: object) -> NoReturn:
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(ExitCode.USAGE)


def write_error_log(outdir: Path | None, text: str) -> Path | None:
    """Store ``text`` (a traceback) in ``OUTDIR/xaicli-error.log``, else in the temporary folder."""
    header = f"xaicli {time.strftime('%Y-%m-%dT%H:%M:%S%z')} pid {os.getpid()}: {' '.join(sys.argv)}\n"
    candidates = [outdir / ERROR_LOG] if outdir is not None else []
    candidates.append(Path(tempfile.gettempdir()) / f"xaicli-error-{os.getpid()}.log")
    for path in candidates:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(header + text + "\n")
            return path
        except OSError:
            continue
    return None


@contextmanager
def mapped_errors(outdir: Path | None = None, debug: bool = False) -> Iterator[None]:
    """Map what escapes a command to one stderr line and an exit code (see the module docstring)."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except UsageError as err:
        fail_usage(err)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as err:  # the one place an unexpected error is turned into exit code 4
        text = traceback.format_exc()
        log = write_error_log(outdir, text)
        if debug:
            typer.echo(text.rstrip(), err=True)
        where = f" (traceback in {log})" if log is not None else ""
        typer.echo(f"error: the run failed: {type(err).__name__}: {one_line(err)[:500]}{where}", err=True)
        raise typer.Exit(ExitCode.RUN_FAILED) from None
