"""The one inference loop: logits of a model over batches, in eval mode, no grad, bf16
on GPU. Evaluation, the search's evaluator, export checks and the linear probe's
features all run through ``predict``."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from glora.run.device import autocast

__all__ = ["evaluate", "predict", "pre_logits"]


def pre_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What the head of a timm model sees (the linear probe's features)."""
    return model.forward_head(model.forward_features(images), pre_logits=True)


@torch.no_grad()
def predict(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs (float32, on CPU) of ``forward(model, images)`` (default: the logits) and
    the labels, over ``batches``; the model's train / eval mode is restored after."""
    was_training = model.training
    model.eval()
    outputs, labels = [], []
    for images, y in batches:
        with autocast(device):
            x = images.to(device, non_blocking=True)
            out = model(x) if forward is None else forward(model, x)
        outputs.append(out.float().cpu())
        labels.append(torch.as_tensor(y).cpu())
    model.train(was_training)
    return torch.cat(outputs), torch.cat(labels)


def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` over ``batches``."""
    logits, labels = predict(model, batches, device)
    return {"acc": (logits.argmax(-1) == labels).float().mean().item(), "loss": F.cross_entropy(logits, labels).item()}
