"""Tiny seeded vision transformers for tests: torchvision's ``VisionTransformer`` (nn.MultiheadAttention)
and the bundled demo architecture (timm-style attention), small enough for the CPU.

torchvision zero-initialises the classifier, which makes every logit 0 and every gradient vanish; the
builders give it seeded random weights instead, so top-k targets are distinct and gradients flow.
"""

from __future__ import annotations

import torch
from torch import nn


def tiny_torchvision_vit(image: int = 12, patch: int = 4, classes: int = 6, layers: int = 2,
                         seed: int = 0) -> nn.Module:
    """torchvision ``VisionTransformer``: 3-channel ``image x image`` input, ``(image/patch)^2`` patches
    behind one class token, ``layers`` encoder blocks of width 16 with 2 heads."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(image_size=image, patch_size=patch, num_layers=layers, num_heads=2,
                              hidden_dim=16, mlp_dim=32, num_classes=classes)
    with torch.no_grad():
        nn.init.normal_(model.heads.head.weight, std=0.5)
        nn.init.normal_(model.heads.head.bias, std=0.1)
    return model.eval()


def tiny_demo_vit(seed: int = 0, depth: int = 2) -> nn.Module:
    """The bundled demo ViT's architecture (28x28 grayscale, 7x7 patches + class token), untrained."""
    from xaicli.models.fashion_mnist_vit import FashionMNISTViT

    torch.manual_seed(seed)
    model = FashionMNISTViT(dim=16, depth=depth, num_heads=2)
    with torch.no_grad():
        nn.init.normal_(model.head.weight, std=0.5)
    return model.eval()
