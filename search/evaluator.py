"""Validation accuracy of fixed layouts on a wrapped supernet: each layer merged once per
candidate (one plain matmul per layer), the forward passes run by the caller's inference
loop (``predict``), so the search needs nothing from the trainer."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from glora.spaces import Layout
from glora.supernet import merged_inference, set_layout

__all__ = ["Evaluator", "Predict"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
#: ``predict(model, batches, device)`` -> (logits, labels) over ``batches``, no grad (e.g. ``glora.training.predict``)
Predict = Callable[[nn.Module, Batches, torch.device], tuple[torch.Tensor, torch.Tensor]]


class Evaluator:
    """Scores layouts of ``model`` (wrapped, weights loaded) by top-1 accuracy (or loss) on
    ``batches`` of (images, labels), moved to ``device`` once; ``predict`` runs the forward
    passes."""

    def __init__(self, model: nn.Module, batches: Batches, device: torch.device, predict: Predict):
        self.model = model.to(device).eval()
        self.predict = predict
        self.device = device
        self.batches = [(x.to(device), y.to(device)) for x, y in batches]
        self.count = sum(len(y) for _, y in self.batches)

    def __call__(self, layout: Layout) -> float:
        return self.scores(layout)["acc"]

    def scores(self, layout: Layout) -> dict[str, float]:
        """Top-1 accuracy and mean cross-entropy of ``layout``: on 200 images accuracy moves
        in steps of 0.5 points, while the loss also weighs how sure each prediction is."""
        set_layout(self.model, layout)
        with merged_inference(self.model):
            logits, labels = self.predict(self.model, self.batches, self.device)
        return {"acc": (logits.argmax(-1) == labels).float().sum().item() / self.count,
                "loss": F.cross_entropy(logits.float(), labels).item()}
