"""The model a training stage starts from: the pretrained backbone (the embedded one made
first if needed), a fresh head for the task, GLoRA on the space's layers."""
from __future__ import annotations

import torch

from glora.backbones import EMBEDDED, BackboneSpec, classifier_name, family_of, load_backbone
from glora.backbones.embedded import ensure_embedded_backbone
from glora.data import TaskData, build_task
from glora.spaces import Space, SpaceConfig
from glora.supernet import wrap

from .config import TrainingJobConfig

__all__ = ["space_for", "wrapped_backbone"]


def space_for(space: SpaceConfig, model_name: str) -> Space:
    """The configured space; unset targets are the backbone family's (a ViT's blocks, a CNN's 1×1 convs)."""
    return space.build(default_targets=family_of(model_name).targets)


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
    family_of(cfg.model.name).reset_head(model, task.num_classes)
    wrap(model, space, seed=cfg.trainer.seed, modules_to_train=(classifier_name(model),), up_init=cfg.glora.up_init,
         vector_b=cfg.glora.vector_b)
    return model, spec, task
