"""`glora-pretrain`: build the embedded default backbone.

A small timm ViT is trained from scratch on the procedural source task (``shapes``) and
written as ``backbone.safetensors`` + ``backbone.json``, into the run dir and the cache the
other jobs read. A linear probe on the target suite, against the same architecture at
random init, shows that its features transfer.

    glora-pretrain                      # the default recipe (≤ 3 min on 2 CPU cores)
    glora-pretrain experiment=smoke     # a tiny recipe, seconds
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hydra
import timm
import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig
from tqdm import tqdm

from spaces import write_json_atomic

from .backbone import BackboneSpec, ModelConfig, PretrainConfig, build_model, embedded_cache_dir, load_backbone
from .checkpoint import save_weights
from .data import TARGET_TASKS, DataConfig, Preprocess, build_task
from .data.embedded import SIZE, split_sizes
from .engine import TrainerConfig, autocast, evaluate, pick_device, warmup_cosine
from .jobs import CONF_DIR, PathsConfig, run_job
from .probe import linear_probe

log = logging.getLogger(__name__)


@dataclass
class PretrainJobConfig:
    task_name: str = "pretrain"
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # its device
    data: DataConfig = field(default_factory=DataConfig)  # its eval batch size, for the probe
    paths: PathsConfig = field(default_factory=PathsConfig)
    probe_tasks: list[str] = field(default_factory=lambda: list(TARGET_TASKS))  # [] skips the probe


def pretrain_backbone(cfg: PretrainConfig, out_dir: Path, device: str = "auto") -> dict:
    """Train the embedded backbone and write ``backbone.safetensors`` + ``backbone.json``."""
    dev = pick_device(device)
    torch.manual_seed(cfg.seed)
    pre = Preprocess(cfg.kwargs.get("img_size", SIZE))
    sizes = {**split_sizes(cfg.task), "train": cfg.train_size}
    source = build_task(DataConfig(task=cfg.task, seed=cfg.seed, batch_size=cfg.batch_size), pre, sizes=sizes)
    model = timm.create_model(cfg.name, pretrained=False, num_classes=source.num_classes, **cfg.kwargs).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps)
    start, step, epoch = time.time(), 0, 0
    bar = tqdm(total=cfg.steps, desc="pretrain", unit="step", dynamic_ncols=True)
    model.train()
    while step < cfg.steps:
        for images, labels in source.loader("train", train=True, seed=cfg.seed * 1000 + epoch):
            with autocast(dev):
                loss = F.cross_entropy(model(images.to(dev)), labels.to(dev), label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step >= cfg.steps:
                break
        epoch += 1
    bar.close()
    val = evaluate(model, source.loader("val"), dev)
    seconds = time.time() - start
    spec = BackboneSpec(cfg.name, dict(cfg.kwargs), pre, "embedded")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(out_dir / "backbone.safetensors", model, {"model": cfg.name, "kwargs": cfg.kwargs})
    metrics = {"source_task": cfg.task, "source_val_acc": val["acc"], "steps": step, "seconds": round(seconds, 1)}
    write_json_atomic(out_dir / "backbone.json", {**spec.to_dict(), "recipe": asdict(cfg), "metrics": metrics})
    log.info("pretrained %s on %s: val acc %.3f in %.0f s", cfg.name, cfg.task, val["acc"], seconds)
    return metrics


def transfer_probe(
    cfg: PretrainConfig, cache_root: str | Path, tasks: list[str], device: str = "auto", batch_size: int = 256
) -> dict:
    """Linear-probe test accuracy per target task: the cached pretrained backbone against
    the same architecture at random init."""
    dev = pick_device(device)
    pretrained, spec = load_backbone(ModelConfig(name="embedded"), cfg, cache_root, num_classes=0)
    torch.manual_seed(cfg.seed)
    random_init = build_model(spec, num_classes=0)
    out: dict[str, dict[str, float]] = {}
    for task in tasks:
        data = build_task(DataConfig(task=task, seed=cfg.seed, batch_size=batch_size, eval_batch_size=batch_size), spec.preprocess)
        out[task] = {
            name: linear_probe(model.to(dev), data.loader("train"), data.loader("test"), dev)
            for name, model in (("pretrained", pretrained), ("random_init", random_init))
        }
        log.info("linear probe %-12s pretrained %.3f | random init %.3f", task, out[task]["pretrained"], out[task]["random_init"])
    if tasks:
        for name in ("pretrained", "random_init"):
            out.setdefault("mean", {})[name] = sum(out[t][name] for t in tasks) / len(tasks)
    return out


def run_pretrain(cfg: PretrainJobConfig, run_dir: Path) -> float:
    cache = embedded_cache_dir(cfg.pretrain, cfg.paths.cache)
    metrics = pretrain_backbone(cfg.pretrain, run_dir, cfg.trainer.device)
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("backbone.safetensors", "backbone.json"):  # copy, then rename: atomic
        shutil.copyfile(run_dir / name, cache / f".{name}.tmp")
        (cache / f".{name}.tmp").replace(cache / name)
    metrics["cache_dir"] = str(cache)
    metrics["linear_probe"] = transfer_probe(cfg.pretrain, cfg.paths.cache, cfg.probe_tasks, cfg.trainer.device, cfg.data.eval_batch_size)
    write_json_atomic(run_dir / "metrics.json", metrics)
    log.info("backbone written to %s and cached in %s", run_dir, cache)
    return metrics["source_val_acc"]


ConfigStore.instance().store(name="pretrain_schema", node=PretrainJobConfig)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="pretrain")
def main(cfg: DictConfig) -> float:
    return run_job(run_pretrain, cfg)
