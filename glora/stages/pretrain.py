"""Pretraining the embedded default backbone into the run dir and the cache the other
jobs read, then a linear probe on the target suite against the same architecture at
random init: the check that its features transfer."""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from glora.backbones import ModelConfig, build_model, load_backbone
from glora.backbones.embedded import PretrainConfig, embedded_cache_dir, pretrain_backbone
from glora.data import TARGET_TASKS, DataConfig, build_task
from glora.probe import linear_probe
from glora.run.device import pick_device
from glora.run.errors import JobError
from glora.run.io import atomic_write, ensure_writable, write_json_atomic

from .config import JobConfig

__all__ = ["PretrainJobConfig", "run_pretrain", "transfer_probe"]

log = logging.getLogger(__name__)


@dataclass
class PretrainJobConfig(JobConfig):
    task_name: str = "pretrain"
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    data: DataConfig = field(default_factory=DataConfig)  # its eval batch size, for the probe
    probe_tasks: list[str] = field(default_factory=lambda: list(TARGET_TASKS))  # [] skips the probe


def transfer_probe(embedded_dir: Path, tasks: list[str], device: str = "auto", batch_size: int = 256, seed: int = 0) -> dict:
    """Linear-probe test accuracy per target task: the pretrained backbone in
    ``embedded_dir`` against the same architecture at random init."""
    dev = pick_device(device)
    pretrained, spec = load_backbone(ModelConfig(name="embedded"), num_classes=0, embedded_dir=embedded_dir)
    torch.manual_seed(seed)
    random_init = build_model(spec, num_classes=0)
    out: dict[str, dict[str, float]] = {}
    for task in tasks:
        data = build_task(DataConfig(task=task, seed=seed, batch_size=batch_size, eval_batch_size=batch_size), spec.preprocess)
        out[task] = {
            name: linear_probe(model, data.loader("train"), data.loader("test"), dev)
            for name, model in (("pretrained", pretrained), ("random_init", random_init))
        }
        log.info("linear probe %-12s pretrained %.3f | random init %.3f", task, out[task]["pretrained"], out[task]["random_init"])
    if tasks:
        for name in ("pretrained", "random_init"):
            out.setdefault("mean", {})[name] = sum(out[t][name] for t in tasks) / len(tasks)
    return out


def run_pretrain(cfg: PretrainJobConfig, run_dir: Path) -> dict:
    """Pretrain into ``run_dir``, copy into the cache (atomically), probe; returns the metrics."""
    cache = embedded_cache_dir(cfg.pretrain, cfg.paths.cache)
    try:
        ensure_writable(cache)  # before pretraining, not after
    except JobError:
        raise JobError(f"paths.cache={cfg.paths.cache!r} is not writable; point it at a writable folder") from None
    metrics = pretrain_backbone(cfg.pretrain, run_dir, cfg.trainer.device)
    for name in ("backbone.safetensors", "backbone.json"):  # backbone.json last: the cache's commit marker
        atomic_write(cache / name, lambda tmp, name=name: shutil.copyfile(run_dir / name, tmp))
    metrics["cache_dir"] = str(cache)
    metrics["linear_probe"] = transfer_probe(cache, cfg.probe_tasks, cfg.trainer.device, cfg.data.eval_batch_size, cfg.pretrain.seed)
    write_json_atomic(run_dir / "metrics.json", metrics)
    log.info("backbone written to %s and cached in %s", run_dir, cache)
    return metrics
