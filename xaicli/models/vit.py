"""The anatomy of a vision transformer, as the attention methods need it: where its self-attention modules
are, which block each belongs to, and how intermediate tokens become class scores.

Two kinds of attention module are recognised, which between them cover torchvision's ViT and timm's
ViT / DeiT / BEiT / EVA (and the bundled demo ViT, built like timm's):

* ``nn.MultiheadAttention`` (torchvision ``EncoderBlock.self_attention``);
* timm-style attention: a module with a ``fused_attn`` flag and an ``attn_drop`` child. With the flag
  off, timm computes ``softmax(q k^T / sqrt(d))`` explicitly and passes it through ``attn_drop``; with
  it on (the default) it calls the fused ``scaled_dot_product_attention``, which returns no weights.

How the weights are obtained for one call is :mod:`xaicli.methods.transformer.capture`'s business;
this module only finds the parts. Swin's shifted-window attention (torchvision ``ShiftedWindowAttention``,
timm ``WindowAttention``) attends within local windows, not over the whole image: rollout-style methods
are not defined for it, and the capture refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from xaicli.errors import ModelError

ATTENTION_HELP = ("the attention methods need a vision transformer with global self-attention: torchvision "
                  "ViT (nn.MultiheadAttention), or timm-style attention modules (a fused_attn flag and an "
                  "attn_drop child: timm ViT, DeiT, BEiT, EVA, the bundled fashion_mnist_vit); Swin's "
                  "windowed attention is not covered - use a CAM method there")


def is_timm_style_attention(module: nn.Module) -> bool:
    """A module that computes explicit attention probabilities through ``attn_drop`` when ``fused_attn``
    is off (timm's ``Attention`` and its relatives)."""
    return hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module)


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every recognised self-attention module of ``model`` (module docstring), in definition order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.MultiheadAttention) or is_timm_style_attention(m)]


def block_of(attention_name: str) -> str:
    """The transformer block holding an attention module: its parent (``blocks.3.attn`` -> ``blocks.3``,
    ``encoder.layers.encoder_layer_0.self_attention`` -> ``encoder.layers.encoder_layer_0``)."""
    if "." not in attention_name:
        raise ModelError(f"attention module {attention_name!r} is not inside a transformer block")
    return attention_name.rsplit(".", 1)[0]


#: (final token norm, pooled-feature norm, classifier) attribute paths, tried in order: timm and the demo
#: ViT (``norm``, ``fc_norm``, ``head``), torchvision (``encoder.ln``, ``heads``), Hugging Face
#: (``vit.layernorm``, ``classifier``)
HEAD_PATHS: tuple[tuple[str, str | None, str], ...] = (
    ("norm", "fc_norm", "head"),
    ("encoder.ln", None, "heads"),
    ("vit.layernorm", None, "classifier"),
)


@dataclass
class TokenHead:
    """The model's own path from tokens to class scores, applied to mean-pooled intermediate tokens."""

    norm: nn.Module
    fc_norm: nn.Module | None
    head: nn.Module

    def __call__(self, tokens: Tensor) -> Tensor:
        """(B, T, D) tokens -> (B, N) class scores: ``head(fc_norm(norm(mean_t tokens)))``.

        Pooling first is what LeGrad's authors and torchcam do (the mean over all tokens, class token
        included); norm and pooling commute up to that choice because the norm acts per token."""
        pooled = self.norm(tokens.mean(dim=1))  # (B, D)
        if self.fc_norm is not None:
            pooled = self.fc_norm(pooled)
        return self.head(pooled)


def token_head(model: nn.Module) -> TokenHead:
    """Find the final norm and classifier (:data:`HEAD_PATHS`); ModelError when the model has neither."""
    modules = dict(model.named_modules())
    for norm, fc_norm, head in HEAD_PATHS:
        if norm in modules and head in modules:
            extra = modules.get(fc_norm) if fc_norm else None
            return TokenHead(modules[norm], extra, modules[head])
    tried = ", ".join(f"{n} + {h}" for n, _, h in HEAD_PATHS)
    raise ModelError(f"cannot find the model's final norm and classifier (tried {tried}); LeGrad scores "
                     "intermediate tokens with them")


