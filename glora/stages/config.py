"""The config every job shares, once: each job's dataclass extends one of these bases,
and the pipeline builds its stages' configs from its own (``narrow``) instead of
re-listing fields."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional, TypeVar

from glora.backbones import ModelConfig
from glora.backbones.embedded import PretrainConfig
from glora.data import DataConfig
from glora.supernet import GLoRAConfig, SupportSteps
from glora.training import OptimConfig, TrainerConfig

__all__ = ["GLoRAOptimConfig", "JobConfig", "PathsConfig", "TrainingJobConfig", "narrow"]

T = TypeVar("T")


@dataclass
class PathsConfig:
    runs: str = "runs"  # every job's run dir lives under here
    cache: str = "runs/cache"  # the embedded backbone, pretrained once


@dataclass
class GLoRAOptimConfig(SupportSteps, OptimConfig):
    """The ``optim`` group: the trainer's AdamW and schedule, and GLoRA's per-support-tensor
    steps (``optim.lr_mult`` / ``fixed_lr`` / ``relative_step``) that become its groups."""

    def __post_init__(self) -> None:
        OptimConfig.__post_init__(self)
        SupportSteps.__post_init__(self)

    def groups(self, model) -> list[dict]:
        """AdamW's parameter groups for ``model`` at ``optim.lr`` (``fit(groups=...)``)."""
        return self.param_groups(model, self.lr)


@dataclass
class JobConfig:
    """What every job has: a name (its runs land in ``runs/<task_name>/``), paths, and the
    trainer section (device and seed; length where the job trains)."""

    task_name: str = "job"
    paths: PathsConfig = field(default_factory=PathsConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


@dataclass
class TrainingJobConfig(JobConfig):
    """What every job that trains from the pretrained backbone has."""

    resume: Optional[str] = None  # a run dir of this job to continue
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: GLoRAOptimConfig = field(default_factory=GLoRAOptimConfig)
    glora: GLoRAConfig = field(default_factory=GLoRAConfig)


def narrow(cfg: Any, cls: type[T], **changes: Any) -> T:
    """A ``cls`` config taking every field it shares with ``cfg`` (then ``changes``); the
    task name stays ``cls``'s own."""
    shared = {f.name: getattr(cfg, f.name) for f in fields(cls) if f.name != "task_name" and hasattr(cfg, f.name)}
    return cls(**{**shared, **changes})
