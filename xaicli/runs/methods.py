"""``xaicli methods``: every registered method with its paper, capabilities and options."""

from __future__ import annotations

from typing import Any

from xaicli.methods import available_methods


def method_catalog() -> dict[str, dict[str, Any]]:
    """Name -> family, summary, paper, capabilities and options (default, help, choices)."""
    return {name: {"family": c.family, "summary": c.summary, "paper": c.paper, "needs_layer": c.needs_layer,
                   "uses_gradients": c.uses_gradients, "chunked": c.chunked,
                   "options": {k: {"default": o.default, "help": o.help,
                                   "choices": list(o.choices) if o.choices else None}
                               for k, o in c.options.items()}}
            for name, c in available_methods().items()}
