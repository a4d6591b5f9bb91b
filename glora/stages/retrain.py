"""Retraining a layout from the pretrained backbone, then merge and export a plain timm
model: model.safetensors (the merged weights of the plain timm architecture), model.json
(timm name, kwargs, num_classes, layout hash: all a user needs to rebuild it without this
project), adapter.safetensors (only the layout's support-tensor slices and the head,
kilobytes, for ``supernet.load_adapter`` onto the same backbone) and metrics.json
(accuracy merged and unmerged, trainable params, adapter size, the merged-vs-unmerged max
logit difference measured at export)."""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import torch

from glora.run import distributed
from glora.run.checkpoint import save_weights
from glora.run.device import pick_device
from glora.run.errors import JobError, param_count, require
from glora.run.io import ensure_writable, write_json_atomic
from glora.spaces import Layout
from glora.supernet import merge, parameterisation, save_adapter, set_layout
from glora.training import Checkpoint, RunFiles, fit, predict

from .config import GLoRAOptimConfig, TrainingJobConfig
from .setup import wrapped_backbone

__all__ = ["PROTOCOLS", "RetrainConfig", "RetrainJobConfig", "retrain"]

log = logging.getLogger(__name__)

PROTOCOLS = {"vtab": ("trainval", "test"), "val": ("train", "val")}  # train split, report split


@dataclass
class RetrainConfig:
    protocol: str = "vtab"  # vtab: train on train+val, report test | val: train on train, report val
    budget: Optional[float] = None  # refuse a layout with more trainable params
    lr_from_search: bool = True  # train at the lr the search's re-ranking chose from its grid (search.rerank_lrs), not optim.lr

    def __post_init__(self) -> None:
        require(self.protocol in PROTOCOLS, "retrain.protocol", self.protocol, f"use one of {sorted(PROTOCOLS)}")
        if self.budget is not None:
            self.budget = param_count(self.budget, "retrain.budget", "use null (no limit) or a positive whole number of params")


@dataclass
class RetrainJobConfig(TrainingJobConfig):
    task_name: str = "retrain"
    layout: Optional[str] = None  # a glora-layout/1 JSON (a search's layout.json or your own)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)


def retrain_optim(cfg: RetrainJobConfig, layout: Layout) -> GLoRAOptimConfig:
    """``cfg.optim``, at the lr the search's re-ranking chose for this layout when it chose
    one from a grid of lrs (its layout.json's ``standalone_lr`` among ``standalone_lrs``):
    that choice was made on val, so it is the tuned lr a user who asked for a grid expects
    the retraining to use. A re-ranking at one lr chose nothing, and optim.lr stands."""
    tried = layout.metrics.get("standalone_lrs") or []
    if not isinstance(tried, list):
        raise JobError(f"layout {cfg.layout}: metrics.standalone_lrs={tried!r} is not a list of lrs; fix it, or drop it to train at optim.lr")
    if not cfg.retrain.lr_from_search or len(tried) < 2:
        return cfg.optim
    lr = layout.metrics.get("standalone_lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise JobError(f"layout {cfg.layout}: metrics.standalone_lr={lr!r} is not a positive lr; "
                       "fix it, or set retrain.lr_from_search=false to train at optim.lr")
    log.info("training at lr %g, the search's re-ranking choice among %s (retrain.lr_from_search=false trains at optim.lr=%g)",
             lr, tried, cfg.optim.lr)
    return replace(cfg.optim, lr=lr)


def retrain(cfg: RetrainJobConfig, run_dir: Path) -> dict:
    """Retrain ``cfg.layout`` from the pretrained backbone, merge, check and export."""
    if not cfg.layout:
        raise JobError("layout is not set; point it at a layout JSON: glora-retrain layout=runs/search/<time>/layout.json")
    ensure_writable(run_dir)
    layout = Layout.load(cfg.layout)
    if cfg.retrain.budget is not None and layout.trainable_params > cfg.retrain.budget:
        raise JobError(
            f"layout {cfg.layout} has {layout.trainable_params} trainable params, above retrain.budget={cfg.retrain.budget}; "
            "search again under that budget or raise it"
        )
    optim = retrain_optim(cfg, layout)  # a bad lr in the layout fails here, before any training
    model, spec, task = wrapped_backbone(cfg, layout.space)
    layout = set_layout(model, layout)  # one LayoutError for a layout of another model or space
    identity = {"parameterisation": parameterisation(cfg.glora.vector_b), "model": spec.name, "kwargs": spec.kwargs, "num_classes": task.num_classes, "layout_hash": layout.hash}
    train_split, report_split = PROTOCOLS[cfg.retrain.protocol]
    summary = {"identity": identity, "backbone": spec.to_dict(), "config": asdict(cfg)}
    callbacks = (Checkpoint(run_dir, identity, "retrain.safetensors"),
                 RunFiles(run_dir, f"retraining {layout.hash} on {task.name}", summary, cfg.trainer.seed))
    fit(model, task, optim, cfg.trainer, (train_split, report_split), callbacks, groups=optim.groups(model))

    # ---- merge, check, export ------------------------------------------------------------
    device = pick_device(cfg.trainer.device)
    loader = task.loader(report_split)
    unmerged, labels = predict(model, loader, device)
    head_params = sum(p.numel() for p in model.get_classifier().parameters())
    adapter_bytes = None
    if distributed.is_main():  # the adapter needs the wrappers, which merge unloads
        adapter = save_adapter(run_dir / "adapter.safetensors", model, layout, {"kwargs": spec.kwargs, "num_classes": task.num_classes})
        adapter_bytes = adapter.stat().st_size
    merge(model)
    merged, _ = predict(model, loader, device)
    max_diff = (merged - unmerged).abs().max().item()
    same = bool(torch.equal(merged.argmax(-1), unmerged.argmax(-1)))
    if not same:
        log.warning("merged and unmerged predictions differ on %d images (max logit diff %.2e)", int((merged.argmax(-1) != unmerged.argmax(-1)).sum()), max_diff)
    metrics = {
        "task": task.name, "protocol": cfg.retrain.protocol, "report_split": report_split,
        f"{report_split}_acc": (merged.argmax(-1) == labels).float().mean().item(),
        f"{report_split}_acc_unmerged": (unmerged.argmax(-1) == labels).float().mean().item(),
        "merged_predictions_equal": same, "merged_max_logit_diff": max_diff,
        "trainable_params": layout.trainable_params, "head_params": head_params, "layout_hash": layout.hash,
        "adapter_bytes": adapter_bytes, "lr": optim.lr,
    }
    if not distributed.is_main():  # every rank holds the same model; rank 0 exports it
        return metrics
    save_weights(run_dir / "model.safetensors", model, identity)
    write_json_atomic(run_dir / "model.json", {
        "name": spec.name, "kwargs": spec.kwargs, "num_classes": task.num_classes, "layout_hash": layout.hash,
        "preprocess": asdict(spec.preprocess), "layout": layout.to_dict(),
    })
    write_json_atomic(run_dir / "metrics.json", metrics)
    log.info("%s acc %.4f (merged) / %.4f (unmerged), max logit diff %.2e; exported %s", report_split,
             metrics[f"{report_split}_acc"], metrics[f"{report_split}_acc_unmerged"], max_diff, run_dir / "model.safetensors")
    return metrics

