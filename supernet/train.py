"""`glora-train`: train the GLoRA supernet.

Every step trains one random layout (each layer's A–E drawn by a generator seeded from the
run seed and the step, so resumed and multi-process runs draw the same layouts); the head
trains alongside. Every epoch ends with an atomic checkpoint in the run dir.

    glora-train                                   # embedded backbone, embedded `count` task
    glora-train data.task=texture space=mid
    glora-train resume=runs/train/<time>          # continue an interrupted run
    glora-train experiment=smoke
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import hydra
import pandas as pd
import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from spaces import Space, SpaceConfig, write_json_atomic

from . import distributed
from .backbone import BackboneSpec, ModelConfig, PretrainConfig, build_model, classifier_name, load_backbone
from .checkpoint import WEIGHTS, atomic_write, load_checkpoint, load_weights, save_checkpoint
from .data import DataConfig, TaskData, build_task
from .engine import OptimConfig, TrainerConfig, autocast, evaluate, pick_device, step_seed, warmup_cosine
from .errors import CheckpointError, TrainingError
from .jobs import CONF_DIR, PathsConfig, run_job
from .plots import plot_curves
from .wrap import is_wrapped, reseed, wrap

log = logging.getLogger(__name__)

EVAL_SEED = 12345  # validation always sees the same sequence of random subnets


@dataclass
class TrainConfig:
    task_name: str = "train"
    resume: Optional[str] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def train(cfg: TrainConfig, run_dir: Path) -> dict:
    """Train (or resume) a supernet in ``run_dir``; returns the final metrics."""
    if cfg.resume and not (Path(cfg.resume) / WEIGHTS).is_file():
        raise CheckpointError(f"resume={cfg.resume!r} holds no {WEIGHTS}: nothing to resume from")
    space = cfg.space.build()
    model, spec, task = wrapped_backbone(cfg.model, cfg.pretrain, cfg.paths.cache, cfg.data, space, cfg.trainer.seed)
    identity = {"model": spec.name, "kwargs": spec.kwargs, "num_classes": task.num_classes, "space": space.to_dict()}
    summary = {"identity": identity, "backbone": spec.to_dict(), "config": asdict(cfg)}
    history = fit(model, task, cfg.optim, cfg.trainer, run_dir, identity, summary, title=f"supernet training: {task.name}")
    metrics = {"epochs_done": len(history), "complete": len(history) >= cfg.trainer.epochs, **({k: v for k, v in history[-1].items() if "/" in k} if history else {})}
    if distributed.is_main():
        write_json_atomic(run_dir / "metrics.json", metrics)
    return metrics


def wrapped_backbone(
    model_cfg: ModelConfig, pretrain: PretrainConfig, cache: str, data: DataConfig, space: Space, seed: int
) -> tuple[torch.nn.Module, BackboneSpec, TaskData]:
    """The pretrained backbone with a fresh head for the task, GLoRA on ``space``'s layers,
    head trainable. The head and support tensors draw from ``seed``, set only once the
    backbone is ready (it may just have been pretrained in this process), so cached and
    cold runs agree."""
    model, spec = load_backbone(model_cfg, pretrain, cache, num_classes=0)
    task = build_task(data, spec.preprocess)
    torch.manual_seed(seed)
    model.reset_classifier(task.num_classes)
    wrap(model, space, seed=seed, modules_to_train=(classifier_name(model),))
    return model, spec, task


def fit(
    model: torch.nn.Module, task: TaskData, optim: OptimConfig, trainer: TrainerConfig, run_dir: Path,
    identity: dict, summary: dict, splits: tuple[str, str] = ("train", "val"), weights: str = WEIGHTS, title: str = "",
) -> list[dict]:
    """The training loop shared by supernet training and retraining: train on ``splits[0]``,
    evaluate on ``splits[1]`` every epoch, checkpoint every epoch into ``run_dir``
    (resuming from it when a checkpoint is there). A layer in supernet mode draws its
    layout from a generator seeded by (seed, step); a fixed layout ignores it, and so does a
    model without GLoRA (the benchmarks' baselines train through this loop too)."""
    train_split, eval_split = splits
    device = pick_device(trainer.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    supernet = is_wrapped(model)
    optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    rank, world = distributed.rank(), distributed.world_size()
    steps_per_epoch = len(task.loader(train_split, train=True, rank=rank, world=world))
    schedule = warmup_cosine(optimizer, int(optim.warmup_epochs * steps_per_epoch), trainer.epochs * steps_per_epoch, optim.min_lr_ratio)

    epoch, step, history = 0, 0, []
    if (run_dir / weights).is_file():
        progress, state = load_checkpoint(run_dir, model, identity, weights)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        epoch, step, history = progress["epoch"], progress["step"], progress["history"]
        log.info("resuming %s from epoch %d (step %d)", run_dir, epoch, step)

    last_epoch = trainer.epochs if trainer.stop_after_epochs is None else min(trainer.epochs, epoch + trainer.stop_after_epochs)
    for epoch in range(epoch, last_epoch):
        start = time.time()
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        loader = task.loader(train_split, train=True, seed=trainer.seed * 1000 + epoch, rank=rank, world=world)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{trainer.epochs}", unit="step", dynamic_ncols=True, disable=not distributed.is_main())
        for images, labels in bar:
            images, labels = images.to(device), labels.to(device)
            if supernet:
                reseed(model, step_seed(trainer.seed, step))
            with autocast(device):
                logits = model(images)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=trainer.label_smoothing)
            loss_value = loss.item()
            mean_loss = distributed.all_reduce_sum([loss_value], device)[0] / world  # every rank stops together
            if not math.isfinite(mean_loss):
                done = f"epoch {epoch}" if epoch else "none yet"
                raise TrainingError(
                    f"loss is {mean_loss} at step {step} (epoch {epoch + 1}); training stopped. "
                    f"The last good checkpoint ({done}) is kept in {run_dir}; lower optim.lr or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(params)  # N ranks x batch b == one process x batch N*b
            optimizer.step()
            schedule.step()
            step += 1
            loss_sum += loss_value * labels.numel()
            correct += (logits.argmax(-1) == labels).sum().item()
            seen += labels.numel()
        loss_sum, correct, seen = distributed.all_reduce_sum([loss_sum, correct, seen], device)
        if supernet:
            reseed(model, EVAL_SEED)
        val = evaluate(model, task.loader(eval_split), device)
        history.append({
            "epoch": epoch + 1, "step": step, "train/loss": loss_sum / seen, "train/acc": correct / seen,
            f"{eval_split}/loss": val["loss"], f"{eval_split}/acc": val["acc"], "lr": schedule.get_last_lr()[0],
            "seconds": round(time.time() - start, 3),
        })
        log.info("epoch %d: train loss %.4f acc %.3f | %s acc %.3f", epoch + 1, history[-1]["train/loss"], history[-1]["train/acc"], eval_split, val["acc"])
        progress = {"epoch": epoch + 1, "step": step, "history": history}
        if not distributed.is_main():  # rank 0 alone writes the run dir
            continue
        state = {"optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(), "torch_rng": torch.get_rng_state()}
        save_checkpoint(run_dir, model, identity, progress, state, weights)
        table = pd.DataFrame(history)
        atomic_write(run_dir / "metrics.csv", lambda tmp: table.to_csv(tmp, index=False))
        plot_curves(table, run_dir / "train_curves.png", title)
        write_json_atomic(run_dir / "train_state.json", {**progress, "epochs": trainer.epochs, "seed": trainer.seed, **summary})
    return history


@dataclass
class TrainedSupernet:
    """A finished (or interrupted) glora-train run, loaded for the stages after it."""

    run_dir: Path
    model: torch.nn.Module  # wrapped, weights loaded, eval mode
    space: Space
    task: TaskData
    config: TrainConfig
    epoch: int


def load_trained(run_dir: str | Path, device: torch.device | str = "cpu") -> TrainedSupernet:
    """Rebuild a supernet from its run dir alone: architecture from ``train_state.json``,
    every weight (backbone included) from ``supernet.safetensors``."""
    run_dir = Path(run_dir)
    state_file = run_dir / "train_state.json"
    if not run_dir.is_dir() or not state_file.is_file() or not (run_dir / WEIGHTS).is_file():
        raise CheckpointError(f"{str(run_dir)!r} is not a glora-train run dir (needs train_state.json and {WEIGHTS})")
    try:
        saved = json.loads(state_file.read_text())
        schema = OmegaConf.structured(TrainConfig)
        cfg = OmegaConf.to_object(OmegaConf.merge(schema, saved["config"]))
        spec = BackboneSpec.from_dict(saved["backbone"])
        identity = saved["identity"]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{state_file} is corrupt or from another version ({err})") from None
    space = Space.from_dict(identity["space"])
    task = build_task(cfg.data, spec.preprocess)
    model = build_model(spec, identity["num_classes"])
    wrap(model, space, seed=cfg.trainer.seed)
    stored = load_weights(run_dir / WEIGHTS, model, identity)
    model.to(device).eval()
    return TrainedSupernet(run_dir, model, space, task, cfg, int(stored.get("progress", {}).get("epoch", 0)))


ConfigStore.instance().store(name="train_schema", node=TrainConfig)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    metrics = run_job(train, cfg)
    return metrics.get("val/acc", 0.0)


main = distributed.entry_point(hydra_main)  # the console script: torchrun-aware
