"""Shared fixtures: a tiny timm ViT (fast on CPU) and its wrapping helpers."""
from __future__ import annotations

import pytest
import timm
import torch

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)


def make_vit(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**TINY_VIT, **overrides}).eval()


@pytest.fixture
def tiny_vit():
    return make_vit()


@pytest.fixture
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
