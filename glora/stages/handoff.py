"""What one stage hands the next, typed: search -> re-rank -> retrain -> merge -> export
(the search hands the retraining its layout file, whose ``tuned_lr`` is a typed field)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glora.backbones import BackboneSpec
from glora.data import TaskData
from glora.search import Record
from glora.spaces import Layout, TunedLr

__all__ = ["Merged", "Reranked", "Retrained"]


@dataclass
class Reranked:
    """The re-ranking's winner, every candidate's row, and the lr the winner won at."""

    winner: Record
    table: list[dict]
    tuned_lr: TunedLr


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
