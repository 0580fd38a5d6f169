"""Attention probabilities of every self-attention module, captured for one call only.

Fast attention paths return no weights: torchvision's ViT calls ``nn.MultiheadAttention`` with
``need_weights=False`` and timm's ``Attention`` calls the fused ``scaled_dot_product_attention``. Inside
:func:`capture_attention` each recognised module (:func:`xaicli.models.vit.attention_modules`) computes
its attention explicitly and records the probabilities ``A = softmax(q k^T / sqrt(d))``, shaped
``(B, heads, T, T)``, that its output is then computed from - so gradients with respect to ``A`` are the
real ones, through every later layer:

* ``nn.MultiheadAttention``: the instance's ``forward`` is replaced (as the ReLU rules do for ``nn.ReLU``,
  :mod:`xaicli.methods.gradient._relu_rules`) by the same computation as PyTorch's slow path - packed
  in-projection, ``q`` scaled by ``1/sqrt(d)``, softmax, dropout, ``A v``, out-projection - with the
  return value the caller asked for (``need_weights``, ``average_attn_weights``). Self-attention only,
  without masks or added key/value biases (what vision transformers use); anything else is refused.
* timm-style attention: its ``fused_attn`` flag is turned off, so timm's own code computes the softmax,
  and a forward hook on ``attn_drop`` records its output, the tensor that multiplies ``v``.

Everything is restored in ``finally`` (the forwards, the flags, the hooks), also when the forward or
backward pass raises. The model's outputs do not change beyond float rounding (a test checks).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xaicli.errors import ModelError
from xaicli.models.vit import ATTENTION_HELP, attention_modules


class AttentionRecord(dict[str, Tensor]):
    """Attention module name -> its probabilities ``(B, heads, T, T)`` from the last forward pass, in the
    order of :func:`~xaicli.models.vit.attention_modules` (insertion order of the names)."""

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = names

    def in_order(self) -> list[Tensor]:
        """The recorded probabilities, first block first; ModelError if a module was not called."""
        missing = [n for n in self.names if n not in self]
        if missing:
            raise ModelError(f"attention module {missing[0]!r} was not called by the forward pass")
        return [self[n] for n in self.names]


def _explicit_mha(module: nn.MultiheadAttention, name: str, record: AttentionRecord):
    """A ``forward`` for ``module`` that computes (and records) its attention probabilities."""

    def forward(query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None,
                average_attn_weights: bool = True, is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        if not (query is key and key is value):
            raise ModelError(f"attention module {name!r} is not self-attention (query, key and value "
                             "differ); the attention methods explain self-attention only")
        if (key_padding_mask is not None or attn_mask is not None or is_causal or module.bias_k is not None
                or module.add_zero_attn or not module._qkv_same_embed_dim):
            raise ModelError(f"attention module {name!r} uses masks, added key/value biases or separate "
                             "q/k/v projections, which the attention capture does not support")
        x = query if module.batch_first else query.transpose(0, 1)  # (B, T, D)
        b, t, d = x.shape
        heads = module.num_heads
        qkv = F.linear(x, module.in_proj_weight, module.in_proj_bias)  # (B, T, 3D), packed [q; k; v]
        q, k, v = qkv.view(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # each (B, heads, T, d_h)
        attn = torch.softmax((q * (d // heads) ** -0.5) @ k.transpose(-2, -1), dim=-1)  # (B, heads, T, T)
        attn = F.dropout(attn, module.dropout, module.training)
        record[name] = attn
        out = module.out_proj((attn @ v).transpose(1, 2).reshape(b, t, d))  # (B, T, D)
        if not module.batch_first:
            out = out.transpose(0, 1)
        weights = (attn.mean(dim=1) if average_attn_weights else attn) if need_weights else None
        return out, weights

    return forward


def _recorder(name: str, record: AttentionRecord):
    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        record[name] = output

    return hook


@contextmanager
def capture_attention(model: nn.Module) -> Iterator[AttentionRecord]:
    """Record every self-attention module's probabilities during forward passes inside the block
    (module docstring). Raises ModelError when the model has no recognised attention module."""
    found = attention_modules(model)
    if not found:
        raise ModelError(f"no self-attention modules found in this model; {ATTENTION_HELP}")
    record = AttentionRecord([name for name, _ in found])
    saved: list[tuple[nn.Module, str, bool, Any]] = []  # (owner, attribute, had its own, original)
    handles = []
    try:
        for name, module in found:
            if isinstance(module, nn.MultiheadAttention):
                own = "forward" in module.__dict__
                saved.append((module, "forward", own, module.__dict__.get("forward")))
                module.forward = _explicit_mha(module, name, record)
            else:
                own = "fused_attn" in module.__dict__
                saved.append((module, "fused_attn", own, module.__dict__.get("fused_attn")))
                module.fused_attn = False
                handles.append(module.attn_drop.register_forward_hook(_recorder(name, record)))
        yield record
    finally:
        for h in handles:
            h.remove()
        for owner, attr, own, original in reversed(saved):
            if own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)
