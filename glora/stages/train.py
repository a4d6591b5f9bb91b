"""Supernet training: every step trains one random layout (each layer's A–E drawn by a
generator seeded from the run seed and the step, so resumed and multi-process runs draw
the same layouts); the head trains alongside. Every epoch ends with an atomic checkpoint
in the run dir. ``load_trained`` rebuilds a finished run for the stages after it."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from glora.backbones import BackboneSpec, build_model
from glora.data import TaskData, build_task
from glora.run import distributed
from glora.run.checkpoint import WEIGHTS, load_weights, unique_keys
from glora.run.errors import CheckpointError
from glora.run.io import write_json_atomic
from glora.spaces import Space, SpaceConfig
from glora.supernet import SupernetSteps, parameterisation, wrap
from glora.training import Checkpoint, RunFiles, TaskLoaders, TrainerConfig, fit

from .config import GLoRAOptimConfig, TrainingJobConfig
from .sampling import SamplingConfig, step_plan
from .setup import space_for, wrapped_backbone

__all__ = ["TrainJobConfig", "TrainedSupernet", "fit_supernet", "load_trained", "train_supernet"]

log = logging.getLogger(__name__)


@dataclass
class TrainJobConfig(TrainingJobConfig):
    task_name: str = "train"
    space: SpaceConfig = field(default_factory=SpaceConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # which layouts each step trains


def fit_supernet(model: torch.nn.Module, task: TaskLoaders, optim: GLoRAOptimConfig, trainer: TrainerConfig, sampling: SamplingConfig,
                 callbacks: tuple = (), splits: tuple[str, str] = ("train", "val")) -> list[dict]:
    """A wrapped model trained as a supernet: the one training loop with GLoRA's parameter
    groups and the supernet's step hook (which layouts each step trains). glora-train and
    ``glora.train_supernet`` both train through here."""
    return fit(model, task, optim, trainer, splits, callbacks, groups=optim.groups(model),
               hook=SupernetSteps(step_plan(model, sampling, trainer.seed)))


def train_supernet(cfg: TrainJobConfig, run_dir: Path) -> dict:
    """Train (or resume) a supernet in ``run_dir``; returns the final metrics."""
    if cfg.resume and not (Path(cfg.resume) / WEIGHTS).is_file():
        log.warning("resume=%s holds no checkpoint yet (the run ended in its first epoch): starting over", cfg.resume)
    space = space_for(cfg.space, cfg.model.name)
    model, spec, task = wrapped_backbone(cfg, space)
    identity = {"parameterisation": parameterisation(cfg.glora.vector_b), "model": spec.name, "kwargs": spec.kwargs, "num_classes": task.num_classes, "space": space.to_dict()}
    summary = {"identity": identity, "backbone": spec.to_dict(), "config": asdict(cfg)}
    callbacks = (Checkpoint(run_dir, identity), RunFiles(run_dir, f"supernet training: {task.name}", summary, cfg.trainer.seed))
    history = fit_supernet(model, task, cfg.optim, cfg.trainer, cfg.sampling, callbacks)
    metrics = {"epochs_done": len(history), "complete": len(history) >= cfg.trainer.epochs,
               **({k: v for k, v in history[-1].items() if "/" in k} if history else {})}
    if distributed.is_main():
        write_json_atomic(run_dir / "metrics.json", metrics)
        log.info("supernet written to %s", run_dir)
    return metrics


@dataclass
class TrainedSupernet:
    """A finished (or interrupted) supernet training run, loaded for the stages after it."""

    run_dir: Path
    model: torch.nn.Module  # wrapped, weights loaded, eval mode
    space: Space
    task: TaskData
    config: TrainJobConfig


def load_trained(run_dir: str | Path, device: torch.device | str = "cpu") -> TrainedSupernet:
    """Rebuild a supernet from its run dir alone: architecture from ``train_state.json``,
    every weight (backbone included) from ``supernet.safetensors``."""
    run_dir = Path(run_dir)
    state_file = run_dir / "train_state.json"
    if not run_dir.is_dir() or not state_file.is_file() or not (run_dir / WEIGHTS).is_file():
        raise CheckpointError(f"{str(run_dir)!r} is not a glora-train run dir (needs train_state.json and {WEIGHTS})")
    try:
        saved = json.loads(state_file.read_text(), object_pairs_hook=unique_keys)
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainJobConfig), saved["config"]))
        spec = BackboneSpec.from_dict(saved["backbone"])
        identity = saved["identity"]
        space = Space.from_dict(identity["space"], source=str(state_file))  # its ranks checked before any tensor is built
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # a SpaceError is a ValueError
        raise CheckpointError(f"{state_file} is corrupt or from another version ({err})") from None
    if identity.get("parameterisation") != parameterisation(cfg.glora.vector_b):
        raise CheckpointError(f"{run_dir} holds GLoRA weights of parameterisation {identity.get('parameterisation', 'glora-param/1')!r}, "
                              f"this version reads {parameterisation(cfg.glora.vector_b)!r} (/1 predates glora.vector_b); retrain it")
    task = build_task(cfg.data, spec.preprocess)
    model = build_model(spec, identity["num_classes"])
    wrap(model, space, seed=cfg.trainer.seed, vector_b=cfg.glora.vector_b)
    load_weights(run_dir / WEIGHTS, model, identity)
    model.to(device).eval()
    return TrainedSupernet(run_dir, model, space, task, cfg)
