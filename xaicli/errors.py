"""Typed errors and the exit codes they map to, so no error is ever swallowed or guessed at.

* :class:`UsageError` and its subclasses -> :attr:`ExitCode.USAGE` (nothing was run).
* Per-image failures are not exceptions that escape a run: they are recorded (summary + manifest) and
  give :attr:`ExitCode.INPUTS_UNREADABLE`.
* Anything else that escapes a command is a failed run, :attr:`ExitCode.RUN_FAILED`; the CLI's one error
  mapper (``xaicli.cli.errors``) prints one line and keeps the traceback in a log file.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable


class ExitCode(enum.IntEnum):
    """The exit codes of every command: a contract with the scripts and CI jobs that call xaicli."""

    OK = 0
    INPUTS_UNREADABLE = 1  # some inputs could not be read; each is listed, all others were done
    USAGE = 2  # usage or config error; nothing was run
    GATE_FAILED = 3  # a quality gate (``evaluate`` / ``diff``) failed
    RUN_FAILED = 4  # the run itself failed (an unexpected error); see the error log


def close_matches(word: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """Nearest spellings of ``word`` among ``choices`` (also substring hits, useful for layer names)."""
    choices = list(choices)
    hits = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    for c in choices:
        if len(hits) >= n:
            break
        if word and word in c and c not in hits:
            hits.append(c)
    return hits


def format_choices(word: str, choices: Iterable[str], limit: int = 12) -> str:
    """'did you mean ...? valid: ...' text shared by every 'unknown name' error."""
    choices = list(choices)
    near = close_matches(word, choices)
    parts = []
    if near:
        parts.append("did you mean: " + ", ".join(repr(c) for c in near) + "?")
    if len(choices) <= limit:
        parts.append("valid choices: " + ", ".join(repr(c) for c in choices))
    else:
        parts.append(f"{len(choices)} valid choices, e.g. " + ", ".join(repr(c) for c in choices[:limit]))
    return "; ".join(parts)


def not_allowed(value: object, choices: Iterable[object]) -> str:
    """'<value> is not allowed; did you mean ...? valid choices: ...' for enumerated settings."""
    return f"{value!r} is not allowed; {format_choices(str(value), map(str, choices))}"


class XaicliError(Exception):
    """Base class of all errors xaicli raises on purpose."""


class UsageError(XaicliError):
    """Bad configuration or command line: exit code 2, nothing is run."""


class ConfigError(UsageError):
    """A config value is wrong. ``key`` is the dotted path in the YAML (e.g. ``methods[0].layers[1]``)."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"config error at '{key}': {message}")


class ModelError(UsageError):
    """The model cannot be loaded or a layer does not exist."""


class UnknownNameError(UsageError):
    """An unknown method, layer or class name, with the valid choices and close matches in the message."""

    def __init__(self, kind: str, name: str, choices: Iterable[str], key: str | None = None):
        self.kind, self.name, self.key = kind, name, key
        where = f"config error at '{key}': " if key else ""
        super().__init__(f"{where}unknown {kind} {name!r}; {format_choices(name, choices)}")


class ImageDecodeError(XaicliError):
    """One input file cannot be read as an image. Recorded per image; never stops a run."""
