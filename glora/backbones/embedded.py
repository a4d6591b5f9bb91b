"""The embedded default backbone: a small timm ViT trained from scratch, through the one
training loop, on the procedural ``shapes`` task, and cached per recipe. Making it is a
step jobs run first (``ensure_embedded_backbone``); loading it is ``glora.backbones``'s."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from glora.data import DataConfig, Preprocess, build_task
from glora.data.embedded import SIZE, split_sizes
from glora.run import distributed
from glora.run.checkpoint import save_weights
from glora.run.errors import JobError, require
from glora.run.io import ensure_writable, write_json_atomic
from glora.training import OptimConfig, TrainerConfig, fit

from .load import BackboneSpec, create_model

__all__ = ["PretrainConfig", "embedded_cache_dir", "ensure_embedded_backbone", "pretrain_backbone"]

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """The embedded default backbone's recipe: a small timm ViT trained on the procedural source task."""

    name: str = "vit_tiny_patch16_224"
    kwargs: dict[str, Any] = field(
        default_factory=lambda: {"img_size": 32, "patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4}
    )
    task: str = "shapes"
    train_size: int = 16000
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 60
    label_smoothing: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train_size", "steps", "batch_size"):
            require(getattr(self, name) >= 1, f"pretrain.{name}", getattr(self, name), "use at least 1")
        require(self.lr > 0, "pretrain.lr", self.lr, "use a positive learning rate, e.g. 2e-3")
        require(self.weight_decay >= 0 and self.warmup_steps >= 0, "pretrain.weight_decay / warmup_steps",
                (self.weight_decay, self.warmup_steps), "use values >= 0")
        require(0 <= self.label_smoothing < 1, "pretrain.label_smoothing", self.label_smoothing, "use a value in [0, 1)")


def embedded_cache_dir(cfg: PretrainConfig, cache_root: str | Path) -> Path:
    """One cache folder per pretraining recipe: change the recipe, get a new backbone."""
    key = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:10]
    return Path(cache_root) / f"backbone-{key}"


def pretrain_backbone(cfg: PretrainConfig, out_dir: Path, device: str = "auto") -> dict:
    """Train the embedded backbone; write ``backbone.safetensors`` then ``backbone.json``
    (the commit marker) into ``out_dir``."""
    torch.manual_seed(cfg.seed)
    pre = Preprocess(cfg.kwargs.get("img_size", SIZE))
    sizes = {**split_sizes(cfg.task), "train": cfg.train_size}
    source = build_task(DataConfig(task=cfg.task, seed=cfg.seed, batch_size=cfg.batch_size), pre, sizes=sizes)
    model = create_model(cfg.name, source.num_classes, **cfg.kwargs)
    steps_per_epoch = len(source.loader("train", train=True))
    optim = OptimConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_epochs=cfg.warmup_steps / steps_per_epoch)
    trainer = TrainerConfig(epochs=math.ceil(cfg.steps / steps_per_epoch), max_steps=cfg.steps,
                            label_smoothing=cfg.label_smoothing, seed=cfg.seed, device=device)
    start = time.time()
    history = fit(model, source, optim, trainer, local=True)
    seconds = time.time() - start
    spec = BackboneSpec(cfg.name, dict(cfg.kwargs), pre, "embedded")
    metrics = {"source_task": cfg.task, "source_val_acc": history[-1]["val/acc"], "steps": history[-1]["step"], "seconds": round(seconds, 1)}
    save_weights(out_dir / "backbone.safetensors", model, {"model": cfg.name, "kwargs": cfg.kwargs})
    write_json_atomic(out_dir / "backbone.json", {**spec.to_dict(), "recipe": asdict(cfg), "metrics": metrics})
    log.info("pretrained %s on %s: val acc %.3f in %.0f s", cfg.name, cfg.task, metrics["source_val_acc"], seconds)
    return metrics


def ensure_embedded_backbone(cfg: PretrainConfig, cache_root: str | Path, device: str = "auto") -> Path:
    """The cache folder of ``cfg``'s backbone, pretrained there first if it is not yet
    (by rank 0; the other ranks wait)."""
    folder = embedded_cache_dir(cfg, cache_root)
    if distributed.is_main() and not (folder / "backbone.json").is_file():
        try:
            ensure_writable(folder)
        except JobError:
            raise JobError(f"paths.cache={str(cache_root)!r} is not writable, and the embedded backbone must be pretrained into it "
                           "once; point paths.cache at a writable folder") from None
        log.info("no cached embedded backbone in %s: pretraining it once", folder)
        pretrain_backbone(cfg, folder, device)
    distributed.barrier()
    return folder
