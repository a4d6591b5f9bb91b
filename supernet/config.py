"""The GLoRA settings a job sets: how ``wrap`` builds the support tensors (``GLoRAConfig``,
the ``glora`` group) and how fast each support tensor moves (``SupportSteps``, part of the
``optim`` group). They live beside the layer so that the trainer knows nothing of GLoRA: it
receives the parameter groups ``SupportSteps.param_groups`` builds."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

from torch import nn

from glora.run.errors import require

from .layer import UP_INITS, VECTOR_B
from .wrap import param_groups, step_conflicts

__all__ = ["FixedLrs", "GLoRAConfig", "LrMultipliers", "RelativeSteps", "SupportSteps"]


@dataclass
class GLoRAConfig:
    """How ``wrap`` builds the support tensors (the ``glora`` config group)."""

    up_init: str = "kaiming"  # kaiming (peft) | xavier (official GLoRA)
    vector_b: str = "mean"  # mean | sum (official GLoRA, peft): what vector / constant B's row acts on

    def __post_init__(self) -> None:
        require(self.up_init in UP_INITS, "glora.up_init", self.up_init, f"use one of {sorted(UP_INITS)}")
        require(self.vector_b in VECTOR_B, "glora.vector_b", self.vector_b, f"use one of {sorted(VECTOR_B)}")


@dataclass
class LrMultipliers:
    """Per support tensor, a multiple of ``optim.lr``: Adam moves every tensor by ~lr a step,
    but W0⊙A and b0⊙D move W and b by |W0|, |b0| (~1e-2) times that. The defaults (A, D ×30)
    were chosen on validation data (benchmarks/results/recipe-standalone-cpu.md)."""

    A: float = 30.0
    B: float = 1.0
    C: float = 1.0
    D: float = 30.0
    E: float = 1.0

    def __post_init__(self) -> None:
        for tensor, value in asdict(self).items():
            require(math.isfinite(value) and value > 0, f"optim.lr_mult.{tensor}", value, "use a positive, finite multiple of optim.lr (1 = none)")


def _require_null_or_positive(steps, prefix: str, fix: str) -> None:
    """Each per-support-tensor field of ``steps`` is null (lr x lr_mult) or a finite positive value."""
    for tensor, value in asdict(steps).items():
        require(value is None or (math.isfinite(value) and value > 0), f"{prefix}.{tensor}", value, fix)


@dataclass
class FixedLrs:
    """Per support tensor, an lr of its own that neither ``optim.lr`` nor ``optim.lr_mult``
    moves (null: ``lr × lr_mult``). With A and D fixed at the step the multipliers give at
    the recipe's lr, an lr grid tunes the additive paths without driving W0⊙A and b0⊙D to
    30× a large lr."""

    A: Optional[float] = None
    B: Optional[float] = None
    C: Optional[float] = None
    D: Optional[float] = None
    E: Optional[float] = None

    def __post_init__(self) -> None:
        _require_null_or_positive(self, "optim.fixed_lr", "use null (optim.lr x optim.lr_mult) or a positive lr, e.g. 0.03")


@dataclass
class RelativeSteps:
    """For the multiplicative paths, a step relative to the backbone's own weights: A's lr
    in each layer is ``optim.lr × A / mean|W0|`` of that layer (D's: ``/ mean|b0|``), so
    W0 ⊙ A and b0 ⊙ D move W and b by ~``A × lr`` a step on any backbone (null: ``lr ×
    lr_mult``). A constant multiplier cannot do that: mean|W0| is 0.026 on the embedded
    ViT and 0.012 on DINOv2 ViT-S/14, mean|b0| 0.010 and 0.23 (from 0.04 to 1.5 by layer)."""

    A: Optional[float] = None
    D: Optional[float] = None

    def __post_init__(self) -> None:
        _require_null_or_positive(self, "optim.relative_step", "use null (optim.lr x optim.lr_mult) or a positive step relative to lr, e.g. 1.0")


@dataclass
class SupportSteps:
    """Per support tensor, its step: a multiple of the lr, an lr of its own, or a step
    relative to each layer's backbone weights (``optim.lr_mult`` / ``fixed_lr`` /
    ``relative_step``)."""

    lr_mult: LrMultipliers = field(default_factory=LrMultipliers)  # e.g. optim.lr_mult.A=30
    fixed_lr: FixedLrs = field(default_factory=FixedLrs)  # e.g. optim.fixed_lr.A=0.03 (then lr_mult.A is unused)
    relative_step: RelativeSteps = field(default_factory=RelativeSteps)  # e.g. optim.relative_step.D=0.3 (then lr_mult.D is unused)

    def __post_init__(self) -> None:
        both = step_conflicts(asdict(self.fixed_lr), asdict(self.relative_step))
        if both:
            require(False, f"optim.relative_step.{both[0]}", getattr(self.relative_step, both[0]),
                    f"optim.fixed_lr.{both[0]} is set too: set one of the two (null the other)")

    def param_groups(self, model: nn.Module, lr: float) -> list[dict]:
        """``model``'s trainable parameters as optimizer groups at these steps around ``lr``
        (a model without GLoRA layers: one group at ``lr``)."""
        return param_groups(model, lr, asdict(self.lr_mult), asdict(self.fixed_lr), asdict(self.relative_step))

    def describe_steps(self) -> str:
        """The per-support-tensor steps in words, for reports: the multipliers, and the
        fixed lrs and relative steps that replace them where set."""
        fixed = {k: v for k, v in asdict(self.fixed_lr).items() if v is not None}
        relative = {k: v for k, v in asdict(self.relative_step).items() if v is not None}
        mult = {k: v for k, v in asdict(self.lr_mult).items() if k not in fixed and k not in relative}
        return "; ".join([f"lr multipliers {mult}", *([f"fixed lrs {fixed}"] if fixed else []),
                          *([f"steps relative to each layer's mean|W0| (A) / mean|b0| (D) {relative}"] if relative else [])])
