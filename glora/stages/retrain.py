"""Retraining a layout from the pretrained backbone: the trained, still wrapped model and
what the next stages need (``Retrained``). ``retrain_merge_export`` runs the three stages
a ``glora-retrain`` job is: this one, ``merge.merge_checked``, ``export.export``."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

from glora.run.device import pick_device
from glora.run.errors import JobError, param_count, require
from glora.run.io import ensure_writable
from glora.spaces import Layout
from glora.supernet import check_peft_exportable, parameterisation, peft_available, set_layout
from glora.training import Checkpoint, RunFiles, fit

from .config import GLoRAOptimConfig, TrainingJobConfig
from .export import export
from .handoff import Retrained
from .merge import merge_checked
from .setup import wrapped_backbone

__all__ = ["PROTOCOLS", "ExportConfig", "RetrainConfig", "RetrainJobConfig", "Retrained", "retrain", "retrain_merge_export"]

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
class ExportConfig:
    """What the export writes besides model.safetensors / model.json and adapter.safetensors."""

    peft: bool = False  # also peft/: the layout as a PEFT GLoRA adapter (PeftModel.from_pretrained(<backbone>, "peft"); needs peft)


@dataclass
class RetrainJobConfig(TrainingJobConfig):
    task_name: str = "retrain"
    layout: Optional[str] = None  # a glora-layout/1 JSON (a search's layout.json or your own)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


def retrain_optim(cfg: RetrainJobConfig, layout: Layout) -> GLoRAOptimConfig:
    """``cfg.optim``, at the lr the search's re-ranking chose for this layout when it chose
    one from a grid of lrs (the layout's ``tuned_lr``): that choice was made on val, so it is
    the tuned lr a user who asked for a grid expects the retraining to use. A re-ranking at
    one lr chose nothing, and optim.lr stands."""
    tuned = layout.tuned_lr
    if not cfg.retrain.lr_from_search or tuned is None or not tuned.chosen:
        return cfg.optim
    log.info("training at lr %g, the search's re-ranking choice among %s (retrain.lr_from_search=false trains at optim.lr=%g)",
             tuned.lr, list(tuned.grid), cfg.optim.lr)
    return replace(cfg.optim, lr=tuned.lr)


def retrain(cfg: RetrainJobConfig, run_dir: Path) -> Retrained:
    """Retrain ``cfg.layout`` from the pretrained backbone (resuming ``run_dir``'s checkpoint)."""
    if not cfg.layout:
        raise JobError("layout is not set; point it at a layout JSON: glora-retrain layout=runs/search/<time>/layout.json")
    if cfg.export.peft:  # checked before training, not after it
        try:
            peft_available()
        except ImportError as err:
            raise JobError(f"export.peft=true: {err}") from None
    ensure_writable(run_dir)
    layout = Layout.load(cfg.layout)
    if cfg.retrain.budget is not None and layout.trainable_params > cfg.retrain.budget:
        raise JobError(
            f"layout {cfg.layout} has {layout.trainable_params} trainable params, above retrain.budget={cfg.retrain.budget}; "
            "search again under that budget or raise it"
        )
    optim = retrain_optim(cfg, layout)
    model, spec, task = wrapped_backbone(cfg, layout.space)
    layout = set_layout(model, layout)  # one LayoutError for a layout of another model or space
    if cfg.export.peft:
        check_peft_exportable(model)
    identity = {"parameterisation": parameterisation(cfg.glora.vector_b), "model": spec.name, "kwargs": spec.kwargs, "num_classes": task.num_classes, "layout_hash": layout.hash}
    train_split, report_split = PROTOCOLS[cfg.retrain.protocol]
    summary = {"identity": identity, "backbone": spec.to_dict(), "config": asdict(cfg)}
    callbacks = (Checkpoint(run_dir, identity, "retrain.safetensors"),
                 RunFiles(run_dir, f"retraining {layout.hash} on {task.name}", summary, cfg.trainer.seed))
    fit(model, task, optim, cfg.trainer, (train_split, report_split), callbacks, groups=optim.groups(model))
    return Retrained(model, layout, spec, task, identity, report_split, cfg.retrain.protocol, optim.lr, pick_device(cfg.trainer.device))


def retrain_merge_export(cfg: RetrainJobConfig, run_dir: Path) -> dict:
    """A ``glora-retrain`` job: retrain, merge (checked against the unmerged model), export."""
    trained = retrain(cfg, run_dir)
    return export(trained, merge_checked(trained, run_dir, peft=cfg.export.peft), run_dir)
