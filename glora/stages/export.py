"""Export: the merged model as plain timm. model.safetensors (the merged weights of the plain
timm architecture), model.json (timm name, kwargs, num_classes, preprocessing, the layout:
all a user needs to rebuild it without this project) and metrics.json (accuracy merged and
unmerged, trainable params, adapter size, the merged-vs-unmerged max logit difference)."""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from glora.backbones import BackboneSpec
from glora.run import distributed
from glora.run.checkpoint import save_weights
from glora.run.io import write_json_atomic

from .handoff import Merged, Retrained

__all__ = ["export", "write_plain_model"]

log = logging.getLogger(__name__)


def write_plain_model(run_dir: Path, model: nn.Module, spec: BackboneSpec, num_classes: int, identity: dict, **extra: Any) -> None:
    """``model`` (plain timm) as model.safetensors and model.json (name, kwargs, num_classes,
    preprocessing, then ``extra``): what glora-evaluate and plain timm read back."""
    save_weights(run_dir / "model.safetensors", model, identity)
    write_json_atomic(run_dir / "model.json", {"name": spec.name, "kwargs": spec.kwargs, "num_classes": num_classes,
                                               "preprocess": asdict(spec.preprocess), **extra})


def export(trained: Retrained, merged: Merged, run_dir: Path) -> dict:
    """Write the export into ``run_dir`` (rank 0; every rank holds the same model) and return the metrics."""
    metrics, spec, split = merged.metrics, trained.spec, trained.report_split
    if not distributed.is_main():
        return metrics
    write_plain_model(run_dir, merged.model, spec, trained.task.num_classes, trained.identity,
                      layout_hash=trained.layout.hash, layout=trained.layout.to_dict())
    write_json_atomic(run_dir / "metrics.json", metrics)
    log.info("%s acc %.4f (merged) / %.4f (unmerged), max logit diff %.2e; exported %s", split,
             metrics[f"{split}_acc"], metrics[f"{split}_acc_unmerged"], metrics["merged_max_logit_diff"], run_dir / "model.safetensors")
    return metrics
