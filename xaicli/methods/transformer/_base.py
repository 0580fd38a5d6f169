"""Shared machinery of the attention methods: one forward pass with the attention captured, a relevance
per token for every target, the patch tokens laid out on their grid, upsampled and normalised like a CAM.

Shapes: ``A^l`` ``(B, heads, T, T)`` the attention probabilities of block ``l`` (rows: queries, columns:
keys); ``T = p + h*w`` tokens with ``p`` class/register tokens first (:func:`xaicli.models.layout.
prefix_tokens`, else inferred from ``T`` and the input size); a subclass returns a relevance ``(B, K, T)``
per key token and target, of which the ``h*w`` patch entries become the ``(B, K, h, w)`` map.

Gradient methods differentiate the chosen logits with respect to every ``A^l``. Parameters are frozen
(:func:`~xaicli.methods.hooks.inference_state`), so the graph is started at a copy of the input that
requires gradients; summing the chosen logits over the batch is exact, as for Grad-CAM (each image's
logits depend on its own attention only), so one backward pass per target rank serves the whole batch.
"""

from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from xaicli.errors import ModelError
from xaicli.methods.base import Call, Explanation, Method, Option, TargetSpec, resolve_targets
from xaicli.methods.hooks import inference_state
from xaicli.methods.postprocess import normalise_map, upsample
from xaicli.methods.transformer.capture import AttentionRecord, capture_attention
from xaicli.models.layout import Layout, infer_layout, prefix_tokens

ATTENTION_OPTIONS: dict[str, Option] = {
    "upsample": Option("bilinear", "how the patch-grid map is resized to the input",
                       choices=("bilinear", "bicubic", "nearest")),
    "normalise": Option(True, "min-max normalise each map to [0, 1] (false: raw relevance)"),
}


@dataclass
class Forward:
    """What one captured forward pass gives a subclass."""

    logits: Tensor  # (B, N), with autograd (gradient methods) or without
    targets: Tensor  # (B, K)
    attentions: list[Tensor]  # per block, first block first: (B, heads, T, T)
    record: AttentionRecord
    prefix: int  # class/register tokens in front of the patches


class AttentionMethod(Method):
    """Base of the attention methods; a subclass supplies :meth:`relevance`."""

    family = "attention"
    needs_attention = True
    options = ATTENTION_OPTIONS

    def compute(self, x: Tensor, targets: TargetSpec, call: Call) -> Explanation:
        size = (x.shape[-2], x.shape[-1])
        with inference_state(self.model), capture_attention(self.model) as record:
            with self.extra_capture() as extra:
                with torch.set_grad_enabled(self.uses_gradients):
                    xg = x.detach().requires_grad_(True) if self.uses_gradients else x
                    logits = self.model(xg)  # (B, N)
                    tgt = resolve_targets(logits, targets)  # (B, K)
                    attentions = record.in_order()
                    layout = self.token_layout(attentions, x.shape[0], size)
                    fwd = Forward(logits, tgt, attentions, record, layout.prefix)
                    rel = self.relevance(fwd, extra)  # (B, K, T)
        h, w = layout.grid
        maps = rel[:, :, layout.prefix :].reshape(*rel.shape[:2], h, w).detach().float()  # (B, K, h, w)
        return Explanation(maps={None: self.finish(maps, size)}, targets=tgt, logits=logits.detach())

    def extra_capture(self) -> AbstractContextManager:
        """A context manager recording whatever else a subclass needs in the same forward pass (LeGrad:
        the blocks' output tokens); it yields what :meth:`relevance` receives as ``extra``."""
        return nullcontext()

    @abstractmethod
    def relevance(self, fwd: Forward, extra: object) -> Tensor:
        """(B, K, T) relevance of every token (the keys' side) for every target."""

    def token_layout(self, attentions: list[Tensor], batch: int, size: tuple[int, int]) -> Layout:
        """Prefix tokens and patch grid of the attention's ``T`` tokens; refuses windowed attention."""
        shapes = {tuple(a.shape[-2:]) for a in attentions}
        square = len(shapes) == 1 and attentions[0].shape[-1] == attentions[0].shape[-2]
        if not square or any(a.dim() != 4 or a.shape[0] != batch for a in attentions):
            raise ModelError(f"{self.name} needs global self-attention over the same tokens in every block; "
                             "this model's attention is windowed or changes size (Swin-like), which "
                             "rollout-style methods do not cover")
        t = attentions[0].shape[-1]
        layout = infer_layout((t, 1), size, prefix=prefix_tokens(self.model))
        if layout is None:
            raise ModelError(f"{self.name}: {t} tokens do not form a patch grid for a {size[0]}x{size[1]} "
                             "input")
        return layout

    def finish(self, maps: Tensor, size: tuple[int, int]) -> Tensor:
        """(B, K, h, w) -> (B, K, H, W) at input size, normalised as configured (as the CAM methods)."""
        out = upsample(maps, size, self.opts["upsample"])
        if self.opts["upsample"] == "bicubic":
            out = out.clamp_min(0)  # bicubic overshoots below zero
        return normalise_map(out) if self.opts["normalise"] else out  # flat maps: zeros (see postprocess)


def chosen_logit_gradients(fwd: Forward, k: int, inputs: list[Tensor], last: bool) -> tuple[Tensor, ...]:
    """Gradients of the rank-``k`` targets' logits (summed over the batch) with respect to ``inputs``."""
    score = fwd.logits.gather(1, fwd.targets[:, k : k + 1]).sum()
    return torch.autograd.grad(score, inputs, retain_graph=not last)


def class_row(relevance: Tensor, prefix: int) -> Tensor:
    """(B, T, T) token-to-token relevance -> (B, T): the class token's row (the token the classifier
    reads), or the mean of all rows for a model without one (global average pooling)."""
    return relevance[:, 0] if prefix > 0 else relevance.mean(dim=1)
