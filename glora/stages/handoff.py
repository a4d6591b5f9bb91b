"""What one stage hands the next, typed: retrain -> merge -> export."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glora.backbones import BackboneSpec
from glora.data import TaskData
from glora.spaces import Layout

__all__ = ["Merged", "Retrained"]


@dataclass
class Retrained:
    """A retrained layout, handed to merge and export."""

    model: nn.Module  # wrapped (GLoRA layers in place), trained, on the training device
    layout: Layout  # bound to the model
    spec: BackboneSpec
    task: TaskData
    identity: dict  # what the exported weights are checked against when loaded
    report_split: str
    protocol: str
    lr: float
    device: torch.device


@dataclass
class Merged:
    """The merged model (plain backbone modules) and what the merge was checked by."""

    model: nn.Module
    metrics: dict
