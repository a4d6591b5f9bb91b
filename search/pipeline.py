"""`glora-pipeline`: until the full pipeline lands (issue #6), a one-minute demo of the core.

It wraps a small timm ViT with the ``large`` space, samples a layout, perturbs the
support tensors as training would, merges, and checks that the merged plain timm model
gives the same logits; the layout is saved as ``runs/demo/<time>/layout.json``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import timm
import torch

from spaces import Layout, Space, write_json_atomic
from supernet import merge, set_layout, support_parameters, wrap

log = logging.getLogger("glora.pipeline")


def run_demo(out_dir: Path, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    kwargs = dict(img_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=3, num_classes=10)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs).eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        pretrained = model(x)
    space = Space.preset("large")
    wrap(model, space, seed=seed)
    layout = set_layout(model, Layout.sample(model, space, seed=seed))
    with torch.no_grad():
        start_diff = (model(x) - pretrained).abs().max().item()
        for p in support_parameters(model):
            p.normal_(0.0, 0.02)
        unmerged = model(x)
        merged = merge(model)(x)
    metrics = {
        "layout_hash": layout.hash,
        "trainable_params": layout.trainable_params,
        "fresh_vs_pretrained_max_abs": start_diff,
        "merged_vs_unmerged_max_abs": (merged - unmerged).abs().max().item(),
        "merged_module": type(model.blocks[0].attn.qkv).__name__,
    }
    layout.save(out_dir / "layout.json")
    write_json_atomic(out_dir / "metrics.json", metrics)
    return metrics


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out_dir = Path("runs") / "demo" / time.strftime("%Y-%m-%d_%H-%M-%S")
    metrics = run_demo(out_dir)
    log.info("GLoRA core demo (the full pipeline lands with issue #6)")
    for key, value in metrics.items():
        log.info("  %-30s %s", key, value)
    log.info("wrote %s", out_dir)
