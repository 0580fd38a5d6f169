"""``run.compile: true``: ``torch.compile`` the parts of the model that no attribution hook needs.

Compiling the whole model would silently break attribution: TorchDynamo does not see forward hooks
registered after compilation (the CAM methods hook their target layers for every call), nor ReLU
backward rules swapped in at run time (guided backprop, deconvnet). So xaicli compiles, in place with
``nn.Module.compile``, every *maximal* submodule that is neither a hooked layer nor one of its
ancestors: for ResNet-18 explained at ``layer4``, ``conv1``, ``bn1``, ..., ``layer3``, ``avgpool``, ``fc``
and the blocks inside ``layer4``. The hooked layers and their ancestors run eagerly (they only call
their compiled children), so hooks fire as usual and the maps are the same up to floating-point
rounding. Methods that swap ReLU rules (``Method.swaps_relu_rules``) disable compilation (with a
note); for the attention methods the attention modules count as hooked (their forward or ``fused_attn``
flag is swapped for each call). The first batches of each new shape pay the compile time, so it pays
off on long runs on a GPU; it is never required.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def compile_around_hooks(model: nn.Module, hooked: Iterable[str], **compile_kwargs) -> list[str]:
    """Compile each maximal submodule outside the hooked layers' ancestry in place; return their names."""
    keep = {""}  # the root and every hooked layer with all its ancestors stay eager
    for name in hooked:
        parts = name.split(".")
        keep.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    compiled = []
    for name, module in model.named_modules():
        parent = name.rpartition(".")[0]
        if name in keep or parent not in keep or not any(True for _ in module.parameters()):
            continue  # inside an already compiled module, or nothing worth compiling (no weights)
        module.compile(**compile_kwargs)
        compiled.append(name)
    return compiled
