"""A small vision transformer for Fashion-MNIST that ships with trained weights.

The transformer counterpart of :mod:`xaicli.models.fashion_mnist`: the same classes, normalisation and
sample images, trained by ``python -m xaicli.demo.train --model fashion_mnist_vit`` from the Debian package
``dataset-fashion-mnist``. It is a plain ViT (Dosovitskiy et al. 2021) in timm's shape and naming, so
every transformer feature of xaicli - token layouts, the default CAM layer, attention capture - is
exercised on a real trained model without downloading anything::

    patch_embed.proj                    Conv2d 1 -> D, 4x4 patches, stride 4: 28x28 -> 7x7 = 49 tokens
    (cls_token, pos_embed)              one class token in front: 50 tokens of width D
    blocks.<i>.norm1  .attn  .norm2  .mlp   (i = 0..3) pre-norm blocks: x + attn(norm1(x)), x + mlp(norm2(x))
    blocks.<i>.attn.qkv  .attn_drop  .proj
    norm  head                          final LayerNorm, linear classifier on the class token

Like timm's ``Attention``, :class:`Attention` runs the fused ``scaled_dot_product_attention`` unless
``fused_attn`` is off, in which case it computes the softmax explicitly and passes the probabilities
through ``attn_drop``: that is where xaicli's attention methods read them (see
:mod:`xaicli.methods.transformer.capture`). The class-token count and patch grid are attributes
(``num_prefix_tokens``, ``patch_embed.grid_size``) under timm's names, so layout detection reads them
the same way for both.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xaicli.models.fashion_mnist import CLASSES, MEAN, STD

__all__ = ["CLASSES", "MEAN", "STD", "VIT_WEIGHTS_PATH", "Attention", "Block", "FashionMNISTViT",
           "fashion_mnist_vit"]

VIT_WEIGHTS_PATH: Path = Path(__file__).parent / "weights" / "fashion_mnist_vit.pt"
"""Location of the shipped ``state_dict`` (float32), written by the training script."""


class Attention(nn.Module):
    """Multi-head self-attention with one ``qkv`` projection, as timm's ``Attention`` (no masks)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = True  # False: explicit softmax, probabilities pass through attn_drop
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, T, head_dim)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, T, T)
            attn = self.attn_drop(attn.softmax(dim=-1))
            x = attn @ v
        return self.proj(x.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` patches -> tokens (B, h*w, D), row-major as timm's."""

    def __init__(self, image_size: int, patch: int, in_channels: int, dim: int) -> None:
        super().__init__()
        self.grid_size = (image_size // patch, image_size // patch)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h*w, D)


class FashionMNISTViT(nn.Module):
    """ViT for (B, 1, 28, 28) normalised images -> (B, 10) logits (module docstring for the layout)."""

    num_prefix_tokens = 1  # the class token (timm's name)

    def __init__(self, num_classes: int = len(CLASSES), image_size: int = 28, patch: int = 4, dim: int = 64,
                 depth: int = 4, num_heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(image_size, patch, 1, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.patch_embed.num_patches, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, num_heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.apply(_init)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 1, 28, 28) -> tokens after the final norm, (B, 1 + 49, D)."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x)[:, 0])


def _init(m: nn.Module) -> None:
    """timm's ViT initialisation: truncated-normal linear weights (std 0.02), zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)


def fashion_mnist_vit(pretrained: bool = True) -> FashionMNISTViT:
    """Build the demo ViT in eval mode, loading the shipped weights (``weights_only=True``) when
    ``pretrained``."""
    model = FashionMNISTViT()
    if pretrained:
        if not VIT_WEIGHTS_PATH.is_file():
            raise FileNotFoundError(f"Fashion-MNIST ViT weights not found at {VIT_WEIGHTS_PATH}; create them "
                                    "with `python -m xaicli.demo.train --model fashion_mnist_vit`.")
        model.load_state_dict(torch.load(VIT_WEIGHTS_PATH, map_location="cpu", weights_only=True))
    return model.eval()
