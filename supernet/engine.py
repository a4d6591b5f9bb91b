"""Small pieces every training loop here shares: device, precision, schedule, evaluation."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["OptimConfig", "TrainerConfig", "autocast", "evaluate", "pick_device", "predict", "step_seed", "warmup_cosine"]


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 2.0
    min_lr_ratio: float = 0.0


@dataclass
class TrainerConfig:
    """How long, on what device, from which seed."""

    epochs: int = 30
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    stop_after_epochs: Optional[int] = None  # end this process early; `resume=` continues


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present (this process's GPU under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # set per rank by distributed.setup
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU; exact fp32 on CPU (so CPU runs are bit-reproducible)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
    """Linear warm-up then cosine decay to ``min_ratio`` of the base learning rate."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_seed(run_seed: int, step: int) -> int:
    """The seed of one training step's random layout: same on every rank and after resume."""
    return (run_seed * 1_000_003 + step) % (2**63 - 1)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on CPU) and labels of ``model`` over ``loader``, in eval mode."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for images, y in loader:
        with autocast(device):
            logits.append(model(images.to(device, non_blocking=True)).float().cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` over ``loader``."""
    logits, labels = predict(model, loader, device)
    return {"acc": (logits.argmax(-1) == labels).float().mean().item(), "loss": F.cross_entropy(logits, labels).item()}
