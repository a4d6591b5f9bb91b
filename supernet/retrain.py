"""`glora-retrain`: retrain a layout from the pretrained backbone, merge it, export a plain
timm model.

    glora-retrain layout=runs/search/<time>/layout.json           # VTAB protocol: train+val, report test
    glora-retrain layout=my.json retrain.protocol=val            # train on train, report val
    glora-retrain layout=... retrain.budget=20000                # refuse a layout above a budget

Writes model.safetensors (the merged weights of the plain timm architecture), model.json
(timm name, kwargs, num_classes, layout hash: all a user needs to rebuild it without this
project) and metrics.json (test accuracy merged and unmerged, trainable params, the
merged-vs-unmerged max logit difference measured at export).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import hydra
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from spaces import Layout, write_json_atomic

from . import distributed
from .backbone import ModelConfig, PretrainConfig
from .checkpoint import save_weights
from .data import DataConfig
from .engine import OptimConfig, TrainerConfig, pick_device, predict
from .errors import JobError
from .jobs import CONF_DIR, PathsConfig, ensure_writable, run_job
from .train import fit, wrapped_backbone
from .wrap import merge, set_layout

log = logging.getLogger(__name__)

PROTOCOLS = {"vtab": ("trainval", "test"), "val": ("train", "val")}  # train split, report split


@dataclass
class RetrainConfig:
    protocol: str = "vtab"  # vtab: train on train+val, report test | val: train on train, report val
    budget: Optional[float] = None  # refuse a layout with more trainable params


@dataclass
class RetrainJobConfig:
    task_name: str = "retrain"
    layout: Optional[str] = None  # a glora-layout/1 JSON (a search's layout.json or your own)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def retrain(cfg: RetrainJobConfig, run_dir: Path) -> dict:
    """Retrain ``cfg.layout`` from the pretrained backbone, merge, check and export."""
    if cfg.retrain.protocol not in PROTOCOLS:
        raise JobError(f"retrain.protocol={cfg.retrain.protocol!r} is unknown; use one of {sorted(PROTOCOLS)}")
    if not cfg.layout:
        raise JobError("layout is not set; point it at a layout JSON: glora-retrain layout=runs/search/<time>/layout.json")
    ensure_writable(run_dir)
    layout = Layout.load(cfg.layout)
    if cfg.retrain.budget is not None and layout.trainable_params > cfg.retrain.budget:
        raise JobError(
            f"layout {cfg.layout} has {layout.trainable_params} trainable params, above retrain.budget={int(cfg.retrain.budget)}; "
            "search again under that budget or raise it"
        )
    model, spec, task = wrapped_backbone(cfg.model, cfg.pretrain, cfg.paths.cache, cfg.data, layout.space, cfg.trainer.seed)
    layout = set_layout(model, layout)  # one LayoutError for a layout of another model or space
    identity = {"model": spec.name, "kwargs": spec.kwargs, "num_classes": task.num_classes, "layout_hash": layout.hash}
    train_split, report_split = PROTOCOLS[cfg.retrain.protocol]
    summary = {"identity": identity, "backbone": spec.to_dict(), "config": asdict(cfg)}
    fit(model, task, cfg.optim, cfg.trainer, run_dir, identity, summary, (train_split, report_split), "retrain.safetensors",
        f"retraining {layout.hash} on {task.name}")

    # ---- merge, check, export ------------------------------------------------------------
    device = pick_device(cfg.trainer.device)
    loader = task.loader(report_split)
    unmerged, labels = predict(model, loader, device)
    head_params = sum(p.numel() for p in model.get_classifier().parameters())
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


ConfigStore.instance().store(name="retrain_schema", node=RetrainJobConfig)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="retrain")
def hydra_main(cfg: DictConfig) -> float:
    metrics = run_job(retrain, cfg)
    return metrics[f"{metrics['report_split']}_acc"]


main = distributed.entry_point(hydra_main)  # the console script: torchrun-aware
