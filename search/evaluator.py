"""Validation accuracy of fixed layouts on a trained supernet: no grad, batched, each
layer merged once per candidate (one plain matmul per layer), bf16 on GPU."""
from __future__ import annotations

import torch

from spaces import Layout
from supernet import merged_inference, set_layout
from supernet.engine import autocast
from supernet.train import TrainedSupernet

__all__ = ["Evaluator"]


class Evaluator:
    """Scores layouts by top-1 accuracy on the supernet's validation split, which is
    moved to the device once."""

    def __init__(self, supernet: TrainedSupernet, device: torch.device, split: str = "val"):
        self.model = supernet.model
        self.device = device
        self.batches = [(x.to(device), y.to(device)) for x, y in supernet.task.loader(split)]
        self.count = sum(len(y) for _, y in self.batches)

    @torch.no_grad()
    def __call__(self, layout: Layout) -> float:
        set_layout(self.model, layout)
        correct = 0
        with merged_inference(self.model), autocast(self.device):
            for images, labels in self.batches:
                correct += (self.model(images).argmax(-1) == labels).sum().item()
        return correct / self.count
