"""``xaicli methods`` and ``xaicli metrics``: every registered method (metric) with its paper, capabilities
and options."""

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


def metric_catalog() -> dict[str, dict[str, Any]]:
    """``xaicli metrics``: name -> family, summary, paper, direction, needs and options."""
    from xaicli.metrics import available_metrics

    return {name: {"family": c.family, "summary": c.summary, "paper": c.paper,
                   "higher_is_better": c.higher_is_better, "needs_masks": c.needs_masks,
                   "reexplains": c.reexplains,
                   "options": {k: {"default": o.default, "help": o.help,
                                   "choices": list(o.choices) if o.choices else None}
                               for k, o in c.options.items()}}
            for name, c in available_metrics().items()}
