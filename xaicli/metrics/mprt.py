"""Model parameter randomisation test, cascading (Adebayo et al., Sanity Checks for Saliency Maps,
NeurIPS 2018, arXiv:1810.03292, sec. 3.1).

If a map explains the model, it must change when the model's learned weights are destroyed. Starting
from the output layer, the parametrised modules are re-initialised one after another (cumulatively:
stage s has the last s modules random) and the map is recomputed for the same input and target on
that randomised model. Per stage the recomputed map is compared with the original (the map as written)
by the similarities of the paper's sec. 3.1:

* ``value``: Spearman rank correlation of |original| and |randomised| (the paper's "absolute value");
* ``spearman_signed``: Spearman of the maps themselves (equal to ``value`` for non-negative maps);
* ``ssim``: structural similarity (Wang et al. 2004; 7 x 7 window, data range 1).

A map that stays similar while the model becomes random (guided backprop, in the paper's fig. 2)
reflects the input, not the model: lower is better. Stages (``stages`` option) are the model's modules
that have parameters of their own and a ``reset_parameters()`` (every Conv, Linear, BatchNorm...),
from the last to the first in definition order - Quantus' ``top_down`` order - or, when given, the
named blocks (each stage re-initialises every such module inside one block). Before each module's
``reset_parameters()`` the random generator is seeded with ``seed`` (as Quantus seeds each layer), in
a forked generator state, so the caller's randomness is untouched. The model itself is never modified:
the test runs on a deep copy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xaicli.errors import ConfigError
from xaicli.methods import Option
from xaicli.metrics.base import Metric, MetricInput, MetricResult
from xaicli.metrics.registry import register
from xaicli.metrics.similarity import spearman, ssim
from xaicli.models.layers import find_module


def resettable(module: nn.Module) -> bool:
    """A module MPRT randomises: it has parameters of its own and a ``reset_parameters()``."""
    return callable(getattr(module, "reset_parameters", None)) and any(True for _ in module.parameters(False))


def randomisation_stages(model: nn.Module, blocks: list[str] | None = None
                         ) -> list[tuple[str, list[nn.Module]]]:
    """(stage name, modules to re-initialise) in cascade order: every resettable module from the output
    layer down, or each named block (its resettable modules, the block itself included)."""
    if blocks:
        out = []
        for i, name in enumerate(blocks):
            block = find_module(model, name, key=f"options.stages[{i}]")
            mods = [m for m in block.modules() if resettable(m)]
            if not mods:
                raise ConfigError(f"options.stages[{i}]", f"block {name!r} has no module with parameters to "
                                  "re-initialise")
            out.append((name, mods))
        return out
    return [(name, [m]) for name, m in reversed(list(model.named_modules())) if name and resettable(m)]


def _devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


@register
class MPRT(Metric):
    name = "mprt"
    summary = ("Cascading model-parameter randomisation: similarity of each map to the map of a model "
               "randomised from the output layer down, per stage (lower = the map depends on the weights).")
    paper = "Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018 (arXiv:1810.03292), sec. 3.1"
    family = "randomisation"
    higher_is_better = False
    reexplains = True
    staged = True
    options = {
        "seed": Option(42, "seed set before each module's reset_parameters() (Quantus' MPRT seeds each layer "
                       "the same way)", minimum=0),
        "stages": Option(None, "module names of the blocks to randomise, in cascade order (default: every "
                         "parametrised module from the output layer down)", kind=list),
        "data_range": Option(1.0, "SSIM data range (maps are in [0, 1])", minimum=0.0),
    }

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any] | None, key: str = "options") -> dict[str, Any]:
        opts = super().resolve_options(given, key)
        if opts["stages"] is not None and not all(isinstance(s, str) for s in opts["stages"]):
            raise ConfigError(f"{key}.stages", f"expected a list of module names, got {opts['stages']!r}")
        return opts

    def compute(self, inp: MetricInput) -> MetricResult:
        b, k = inp.shape
        random_model = copy.deepcopy(inp.model).eval()
        stages = randomisation_stages(random_model, self.opts["stages"])
        original = inp.maps.flatten(0, 1)  # (B*K, H, W)
        keep = [i for i, image_id in enumerate(inp.ids.tolist()) if image_id in inp.keep_ids]
        spear, signed, sim, kept = [], [], [], []
        for _, modules in stages:
            with torch.random.fork_rng(devices=_devices(random_model)):
                for module in modules:
                    torch.manual_seed(self.opts["seed"])
                    module.reset_parameters()
            maps = inp.source.explain(random_model, inp.x, inp.targets, rows=inp.chunk_size)  # (B, K, H, W)
            flat = maps.flatten(0, 1)
            spear.append(spearman(original.abs(), flat.abs()).view(b, k))
            signed.append(spearman(original, flat).view(b, k))
            sim.append(ssim(original, flat, self.opts["data_range"]).view(b, k))
            if keep:
                kept.append(maps[keep])
        fields = {"spearman_signed": torch.stack(signed, -1).float(), "ssim": torch.stack(sim, -1).float()}
        result = MetricResult(torch.stack(spear, -1).float(), fields, [name for name, _ in stages])
        if keep:
            stack = torch.stack(kept, 2)  # (kept, K, S, H, W)
            result.kept = {int(inp.ids[i]): stack[j] for j, i in enumerate(keep)}
        return result


def stage_names(model: nn.Module, blocks: list[str] | None = None) -> list[str]:
    """The stage names :class:`MPRT` would use on ``model`` (for tables and figures)."""
    return [name for name, _ in randomisation_stages(model, blocks)]


__all__ = ["MPRT", "randomisation_stages", "resettable", "stage_names"]


