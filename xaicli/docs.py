"""Documentation generated from the code, so README and code cannot drift apart.

``python -m xaicli.docs`` prints the README's method table from the method registry; a test checks
that README.md contains exactly this text.
"""

from __future__ import annotations

from xaicli.methods import available_methods

BEGIN, END = "<!-- methods-table:begin -->", "<!-- methods-table:end -->"


def methods_table() -> str:
    header = "| method | family | what it shows | paper | options (default) |"
    lines = [BEGIN, header, "|---|---|---|---|---|"]
    for name, cls in available_methods().items():
        family = cls.family + (", needs `layers`" if cls.needs_layer else "") + (
            ", needs a ViT (global self-attention)" if cls.needs_attention else "")
        opts = "<br>".join(f"`{k}`={o.default!r}: {o.help}" for k, o in cls.options.items()) or "-"
        lines.append(f"| `{name}` | {family} | {cls.summary} | {cls.paper} | {opts.replace('|', '/')} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    print(methods_table())
