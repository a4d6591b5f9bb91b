"""The one training loop: pretraining, supernet training and retraining all run through
``fit``. It reads top to bottom — set up, (maybe) restore, then per epoch: train, evaluate,
hand the state to the callbacks — and returns its history. Checkpoints, CSVs and plots
are callbacks (``glora.training.callbacks``), not the loop's business."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Callable, Sequence
from typing import Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from glora.data import TaskData
from glora.run import distributed
from glora.run.device import autocast, pick_device
from glora.run.errors import TrainingError, require
from glora.supernet import RANDOM_LAYOUT, StepLayout, is_wrapped, param_groups, release_step_layout, reseed, use_step_layout

from .inference import evaluate

__all__ = ["step_loss", "Callback", "FixedLrs", "LoopState", "LrMultipliers", "OptimConfig", "RelativeSteps", "TrainerConfig", "fit", "step_seed", "warmup_cosine", "EVAL_SEED"]

log = logging.getLogger(__name__)

EVAL_SEED = 12345  # a supernet's validation always sees the same sequence of random subnets


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
            require(value > 0, f"optim.lr_mult.{tensor}", value, "use a positive multiple of optim.lr (1 = none)")


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
class OptimConfig:
    """AdamW with linear warm-up then cosine decay."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 2.0
    min_lr_ratio: float = 0.0
    lr_mult: LrMultipliers = field(default_factory=LrMultipliers)  # e.g. optim.lr_mult.A=30
    fixed_lr: FixedLrs = field(default_factory=FixedLrs)  # e.g. optim.fixed_lr.A=0.03 (then lr_mult.A is unused)
    relative_step: RelativeSteps = field(default_factory=RelativeSteps)  # e.g. optim.relative_step.D=0.3 (then lr_mult.D is unused)

    def __post_init__(self) -> None:
        require(math.isfinite(self.lr) and self.lr > 0, "optim.lr", self.lr, "use a positive learning rate, e.g. optim.lr=1e-3")
        require(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "use 0 or a positive decay, e.g. 1e-4")
        require(self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs, "use 0 (no warm-up) or more epochs")
        require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", self.min_lr_ratio, "use a fraction of optim.lr in [0, 1]")
        for tensor, step in asdict(self.relative_step).items():
            require(step is None or getattr(self.fixed_lr, tensor) is None, f"optim.relative_step.{tensor}", step,
                    f"optim.fixed_lr.{tensor} is set too: set one of the two (null the other)")

    def describe_steps(self) -> str:
        """The per-support-tensor steps in words, for reports: the multipliers, and the
        fixed lrs and relative steps that replace them where set."""
        fixed = {k: v for k, v in asdict(self.fixed_lr).items() if v is not None}
        relative = {k: v for k, v in asdict(self.relative_step).items() if v is not None}
        mult = {k: v for k, v in asdict(self.lr_mult).items() if k not in fixed and k not in relative}
        return "; ".join([f"lr multipliers {mult}", *([f"fixed lrs {fixed}"] if fixed else []),
                          *([f"steps relative to each layer's mean|W0| (A) / mean|b0| (D) {relative}"] if relative else [])])


@dataclass
class TrainerConfig:
    """How long, on what device, from which seed."""

    epochs: int = 30
    max_steps: Optional[int] = None  # end training (and the schedule) after this many steps
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    stop_after_epochs: Optional[int] = None  # end this process early; `resume=` continues
    eval_every: int = 1  # evaluate every this many epochs (and always after the last)

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "trainer.epochs", self.epochs, "train for at least 1 epoch")
        require(self.max_steps is None or self.max_steps >= 1, "trainer.max_steps", self.max_steps, "use null (whole epochs) or at least 1 step")
        require(0 <= self.label_smoothing < 1, "trainer.label_smoothing", self.label_smoothing, "use a value in [0, 1), e.g. 0.1")
        require(self.seed >= 0, "trainer.seed", self.seed, "use a seed >= 0")
        require(self.eval_every >= 1, "trainer.eval_every", self.eval_every, "evaluate every 1 or more epochs (the last is always evaluated)")
        require(self.stop_after_epochs is None or self.stop_after_epochs >= 1, "trainer.stop_after_epochs", self.stop_after_epochs,
                "use null or at least 1 epoch")


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
    """Linear warm-up then cosine decay to ``min_ratio`` of the base learning rate."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_seed(run_seed: int, step: int) -> int:
    """The seed of one training step's random layout: same on every rank and after resume."""
    return (run_seed * 1_000_003 + step) % (2**63 - 1)


@dataclass
class LoopState:
    """Everything a callback may read (or, on restore, set)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    epochs: int
    epoch: int = 0  # epochs done
    step: int = 0
    history: list[dict] = field(default_factory=list)


class Callback(Protocol):
    def on_fit_start(self, state: LoopState) -> None: ...  # may restore a checkpoint into ``state``

    def on_epoch_end(self, state: LoopState) -> None: ...


def step_loss(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, members: Optional[Sequence[StepLayout]], seed: int,
    label_smoothing: float, device: torch.device,
) -> tuple[torch.Tensor, float]:
    """One step's loss (and correct predictions, averaged over members): cross-entropy of
    the model as it stands, or with ``members`` the mean over the layouts they put in
    place in turn, a distilling member scored against the soft predictions of the last
    teacher before it instead of the labels."""
    loss, correct, teacher = torch.zeros((), device=device), 0.0, None
    for index, member in enumerate(members if members is not None else (RANDOM_LAYOUT,)):
        if members is not None:
            use_step_layout(model, member, seed + index)
        with autocast(device):
            logits = model(images).float()
            target = teacher if member.distill and teacher is not None else labels
            loss = loss + F.cross_entropy(logits, target, label_smoothing=label_smoothing)
        if member.teacher:
            teacher = logits.detach().softmax(-1)
        correct += (logits.argmax(-1) == labels).sum().item()
    if members is not None:
        release_step_layout(model)
    count = len(members) if members is not None else 1
    return loss / count, correct / count


def fit(
    model: nn.Module, task: TaskData, optim: OptimConfig, trainer: TrainerConfig,
    splits: tuple[str, str] = ("train", "val"), callbacks: tuple[Callback, ...] = (), local: bool = False,
    plan: Optional[Callable[[int], Sequence[StepLayout]]] = None,
) -> list[dict]:
    """Train ``model``'s trainable parameters on ``splits[0]``, evaluate on ``splits[1]``
    after every epoch; returns the history (one dict per epoch). A GLoRA supernet draws
    each step's layout from a generator seeded by (seed, step), so resumed and
    multi-process runs draw the same layouts; fixed layouts and plain models ignore it.
    Under torchrun, gradients are averaged over ranks: N ranks × batch b == one process
    × batch N·b; ``local`` trains in this process alone even there (rank 0 making the
    embedded backbone while the others wait). A supernet's ``plan(step)`` lists the layouts
    that step trains (default: one random layout); their losses are averaged into one
    update, and a member that distils learns the soft predictions of the teacher before it."""
    train_split, eval_split = splits
    device = pick_device(trainer.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    supernet = is_wrapped(model)
    sync = not local and distributed.world_size() > 1
    rank, world = (distributed.rank(), distributed.world_size()) if sync else (0, 1)
    steps_per_epoch = len(task.loader(train_split, train=True, rank=rank, world=world))
    total_steps = trainer.epochs * steps_per_epoch if trainer.max_steps is None else min(trainer.max_steps, trainer.epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(param_groups(model, optim.lr, asdict(optim.lr_mult), asdict(optim.fixed_lr), asdict(optim.relative_step)), lr=optim.lr, weight_decay=optim.weight_decay)
    schedule = warmup_cosine(optimizer, round(optim.warmup_epochs * steps_per_epoch), total_steps, optim.min_lr_ratio)
    state = LoopState(model, optimizer, schedule, trainer.epochs)
    for callback in callbacks:
        callback.on_fit_start(state)

    last_epoch = trainer.epochs if trainer.stop_after_epochs is None else min(trainer.epochs, state.epoch + trainer.stop_after_epochs)
    for epoch in range(state.epoch, last_epoch):
        if state.step >= total_steps:
            break
        start = time.time()
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        loader = task.loader(train_split, train=True, seed=trainer.seed * 1000 + epoch, rank=rank, world=world)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{trainer.epochs}", unit="step", dynamic_ncols=True, disable=not distributed.is_main())
        for images, labels in bar:
            images, labels = images.to(device), labels.to(device)
            if supernet and plan is None:
                reseed(model, step_seed(trainer.seed, state.step))
            members = plan(state.step) if plan is not None else None
            loss, right = step_loss(model, images, labels, members, step_seed(trainer.seed, state.step), trainer.label_smoothing, device)
            correct += right
            loss_value = loss.item()
            mean_loss = distributed.all_reduce_sum([loss_value], device)[0] / world if sync else loss_value  # every rank stops together
            if not math.isfinite(mean_loss):
                raise TrainingError(
                    f"loss is {mean_loss} at step {state.step} (epoch {epoch + 1}); training stopped. "
                    f"The last good checkpoint ({f'epoch {epoch}' if epoch else 'none yet'}) is kept; lower optim.lr or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if sync:
                distributed.average_gradients(params)
            optimizer.step()
            schedule.step()
            state.step += 1
            loss_sum += loss_value * labels.numel()
            seen += labels.numel()
            if state.step >= total_steps:
                break
        bar.close()
        if sync:
            loss_sum, correct, seen = distributed.all_reduce_sum([loss_sum, correct, seen], device)
        scores = {}
        if (epoch + 1) % trainer.eval_every == 0 or epoch + 1 == trainer.epochs or state.step >= total_steps:
            if supernet:
                reseed(model, EVAL_SEED)
            scores = {f"{eval_split}/{k}": v for k, v in evaluate(model, task.loader(eval_split), device).items()}
        state.history.append({
            "epoch": epoch + 1, "step": state.step, "train/loss": loss_sum / seen, "train/acc": correct / seen, **scores,
            "lr": schedule.get_last_lr()[0], "seconds": round(time.time() - start, 3),
        })
        state.epoch = epoch + 1
        log.info("epoch %d: train loss %.4f acc %.3f%s", epoch + 1, state.history[-1]["train/loss"], state.history[-1]["train/acc"],
                 f" | {eval_split} acc {scores[f'{eval_split}/acc']:.3f}" if scores else "")
        for callback in callbacks:
            callback.on_epoch_end(state)
    return state.history
