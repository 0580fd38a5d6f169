"""DeepLIFT with the Rescale rule (Shrikumar, Greenside & Kundaje, ICML 2017, arXiv:1704.02685).

Each input's contribution to the difference of the target logit between the input and a baseline ``x'``:

    DL_i(x) = (x_i - x'_i) * m_i,      sum_i DL_i(x) = y^c(x) - y^c(x')       (summation-to-delta, eq. 1)

with the multipliers ``m`` back-propagated from the logit with every nonlinearity's derivative replaced
by its ratio of output and input differences (the Rescale rule, sec. 3.5.1; max pooling as Captum's
DeepLift; see :mod:`._deeplift_rules` for the rules and the modules they cover). The gap
``sum_i DL_i - (y^c(x) - y^c(x'))`` is returned per image and target as ``extras["deeplift_delta"]``: 0
up to float rounding when every nonlinearity of the model is covered, and a measure of how much the
uncovered ones (listed in a warning) matter otherwise.

Max pooling (``max_pooling``): ``rule`` (default) applies Captum's DeepLift max-pooling rule, so the
attributions sum to the logit's change; ``gradient`` keeps the ordinary max-pooling gradient, the default
mode of the authors' reference implementation (``MaxPoolDeepLiftMode.gradient``), under which
summation-to-delta holds only approximately. ``gradient`` is also what Captum 0.9 ends up computing
wherever a ReLU module feeds the pooling (the usual conv-ReLU-pool block): the ReLU's hook receives the
pooling's ordinary gradient, not its rule's result (tests/test_parity_captum.py).

The model runs once on the input and baseline stacked into one batch of 2B rows (as Captum does),
then one backward pass per target rank. Baselines: as integrated gradients' (``black`` by default, a raw
black image after normalisation). The RevealCancel rule is not implemented (nor is it in Captum).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from xaicli.methods.base import Call, Option, TargetSpec, resolve_targets
from xaicli.methods.gradient._base import (
    BASELINE_HELP,
    BASELINES,
    PIXEL_OPTIONS,
    Attribution,
    PixelMethod,
    reference_input,
)
from xaicli.methods.gradient._deeplift_rules import rescale_rules, uncovered_modules
from xaicli.methods.hooks import inference_state
from xaicli.methods.registry import register


@register
class DeepLift(PixelMethod):
    name = "deeplift"
    summary = "DeepLIFT (Rescale rule): contributions to the logit's change from a baseline, summing to it."
    paper = "Shrikumar et al., Learning Important Features Through Propagating Activation Differences, " \
            "ICML 2017 (arXiv:1704.02685)"
    can_wrap = True
    relu_rules = True
    options = {
        **PIXEL_OPTIONS,
        "baseline": Option("black", BASELINE_HELP, choices=BASELINES),
        "blur_sigma": Option(5.0, "Gaussian sigma in pixels for baseline: blur", minimum=0.0),
        "seed": Option(0, "random seed for baseline: uniform", minimum=0),
        "eps": Option(1e-10, "input differences below this use the ordinary derivative (Captum's eps)",
                      minimum=0.0),
        "max_pooling": Option("rule", "rule: Captum's DeepLift max-pooling rule (attributions sum to the "
                              "logit's change); gradient: the ordinary gradient (the DeepLIFT reference "
                              "code's default; what Captum computes where a ReLU module feeds the pooling)",
                              choices=("rule", "gradient")),
    }

    def baseline(self, x: Tensor, call: Call) -> Tensor:
        """The reference input x' (B, C, H, W) for ``x``."""
        return reference_input(self.opts["baseline"], x, call.input_range, self.opts["blur_sigma"],
                               self.opts["seed"])

    def raw(self, x: Tensor, targets: TargetSpec, call: Call) -> Attribution:
        uncovered = uncovered_modules(self.model)
        if uncovered:
            warnings.warn(f"deeplift: no Rescale rule for {', '.join(uncovered)} in this model (they keep "
                          "their ordinary gradient, so the attributions no longer sum to the logit's "
                          "change; see extras deeplift_delta)", stacklevel=3)
        b = x.shape[0]
        x = x.detach()
        base = self.baseline(x, call).detach()  # (B, C, H, W)
        leaf = x.clone().requires_grad_(True)
        rules = rescale_rules(self.model, self.opts["eps"], functional=call.functional_relu,
                              max_pooling_rule=self.opts["max_pooling"] == "rule")
        with inference_state(self.model), torch.enable_grad(), rules:
            both = self.model(torch.cat([leaf, base]))  # (2B, N): rows [x; x']
            logits, base_logits = both[:b], both[b:]
            tgt = resolve_targets(logits, targets)  # (B, K)
            grads = []
            for k in range(tgt.shape[1]):
                score = logits.gather(1, tgt[:, k : k + 1]).sum()
                (g,) = torch.autograd.grad(score, leaf, retain_graph=k < tgt.shape[1] - 1)  # (B, C, H, W)
                grads.append(g)
        acc = torch.promote_types(x.dtype, torch.float32)
        attr = torch.stack(grads, dim=1).to(acc) * (x - base)[:, None].to(acc)  # (B, K, C, H, W)
        gap = (logits.gather(1, tgt) - base_logits.gather(1, tgt)).detach().to(acc)  # (B, K)
        delta = attr.flatten(2).sum(-1) - gap  # (B, K)
        return Attribution(maps={None: attr}, targets=tgt, logits=logits.detach(),
                           extras={"deeplift_delta": delta.float()})
