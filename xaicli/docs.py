"""Documentation generated from the code, so README and code cannot drift apart.

``python -m xaicli.docs`` prints the README's method and metric tables from the registries;
``python -m xaicli.docs --write`` replaces them in README.md. A test checks that README.md contains
exactly this text.
"""

from __future__ import annotations

import sys
from pathlib import Path

from xaicli.methods import available_methods

BEGIN, END = "<!-- methods-table:begin -->", "<!-- methods-table:end -->"
METRICS_BEGIN, METRICS_END = "<!-- metrics-table:begin -->", "<!-- metrics-table:end -->"


def methods_table() -> str:
    header = "| method | family | what it shows | paper | options (default) |"
    lines = [BEGIN, header, "|---|---|---|---|---|"]
    for name, cls in available_methods().items():
        family = cls.family + (", needs `layers`" if cls.needs_layer else "")
        opts = "<br>".join(f"`{k}`={o.default!r}: {o.help}" for k, o in cls.options.items()) or "-"
        lines.append(f"| `{name}` | {family} | {cls.summary} | {cls.paper} | {opts.replace('|', '/')} |")
    lines.append(END)
    return "\n".join(lines)


def metrics_table() -> str:
    from xaicli.metrics import available_metrics

    header = "| metric | family | what it measures | paper | options (default) |"
    lines = [METRICS_BEGIN, header, "|---|---|---|---|---|"]
    for name, cls in available_metrics().items():
        family = cls.family + (", needs `--masks`" if cls.needs_masks else "")
        opts = "<br>".join(f"`{k}`={o.default!r}: {o.help}" for k, o in cls.options.items()) or "-"
        lines.append(f"| `{name}` | {family} | {cls.summary} | {cls.paper} | {opts.replace('|', '/')} |")
    lines.append(METRICS_END)
    return "\n".join(lines)


def rewrite(text: str) -> str:
    """``text`` (README.md) with both generated tables replaced by the current ones."""
    for begin, end, table in ((BEGIN, END, methods_table()), (METRICS_BEGIN, METRICS_END, metrics_table())):
        head, sep, rest = text.partition(begin)
        if not sep:
            raise ValueError(f"README has no {begin} marker")
        text = head + table + rest.partition(end)[2]
    return text


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        readme = Path(__file__).resolve().parent.parent / "README.md"
        readme.write_text(rewrite(readme.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(methods_table() + "\n\n" + metrics_table())
