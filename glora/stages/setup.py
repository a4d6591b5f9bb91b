"""The model a training stage starts from: the pretrained backbone (the embedded one made
first if needed), a fresh head for the task, GLoRA on the space's layers."""
from __future__ import annotations

import torch

from glora.backbone import EMBEDDED, BackboneSpec, classifier_name, load_backbone
from glora.data import TaskData, build_task
from glora.embedded_backbone import ensure_embedded_backbone
from glora.spaces import Space
from glora.supernet import wrap

from .config import TrainingJobConfig

__all__ = ["wrapped_backbone"]


def wrapped_backbone(cfg: TrainingJobConfig, space: Space) -> tuple[torch.nn.Module, BackboneSpec, TaskData]:
    """Backbone + fresh head + GLoRA (head trainable). The head and support tensors draw
    from ``trainer.seed``, set only once the backbone is ready (it may just have been
    pretrained in this process), so cached and cold runs agree."""
    embedded_dir = None
    if cfg.model.name == EMBEDDED:
        embedded_dir = ensure_embedded_backbone(cfg.pretrain, cfg.paths.cache, cfg.trainer.device)
    model, spec = load_backbone(cfg.model, num_classes=0, embedded_dir=embedded_dir, cache_root=cfg.paths.cache)
    task = build_task(cfg.data, spec.preprocess)
    torch.manual_seed(cfg.trainer.seed)
    model.reset_classifier(task.num_classes)
    wrap(model, space, seed=cfg.trainer.seed, modules_to_train=(classifier_name(model),), up_init=cfg.glora.up_init,
         vector_b=cfg.glora.vector_b)
    return model, spec, task
