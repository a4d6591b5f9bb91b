"""The one training loop: pretraining, supernet training and retraining all run through
``fit``. It reads top to bottom — set up, (maybe) restore, then per epoch: train, evaluate,
hand the state to the callbacks — and returns its history. Checkpoints, CSVs and plots
are callbacks (``glora.training.callbacks``), not the loop's business."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from glora.run import distributed
from glora.run.device import autocast, pick_device
from glora.run.errors import TrainingError, require
from glora.run.signals import Stopped, StopRequest

from .inference import evaluate

__all__ = ["step_loss", "Callback", "LoopState", "OptimConfig", "StepHook", "StepMember", "TaskLoaders", "TrainerConfig", "fit", "step_seed", "warmup_cosine"]

log = logging.getLogger(__name__)


class TaskLoaders(Protocol):
    """Where ``fit`` gets its batches (``glora.data.TaskData`` is one): a loader per split."""

    def loader(self, split: str, train: bool = False, seed: int = 0, rank: int = 0, world: int = 1) -> Iterable: ...


class StepMember(Protocol):
    """One forward of a training step: a ``teacher``'s soft predictions become the targets of
    the members after it that ``distill``."""

    teacher: bool
    distill: bool


class StepHook(Protocol):
    """What a model does around the loop's steps, for models whose forward depends on more
    than their weights (a weight-sharing supernet: which sub-models a step trains). The loop
    calls ``members`` once a step, ``put`` before each member's forward, ``release`` after
    the step and ``before_eval`` before each evaluation."""

    def members(self, step: int) -> Sequence[StepMember]: ...

    def put(self, model: nn.Module, member: StepMember, seed: int) -> None: ...

    def release(self, model: nn.Module) -> None: ...

    def before_eval(self, model: nn.Module) -> None: ...


@dataclass(frozen=True)
class _AsIs:
    """The one member of a step without a hook: the model as it stands."""

    teacher: bool = False
    distill: bool = False


_AS_IS = (_AsIs(),)


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay. ``fit`` gives every parameter group it
    receives this schedule; how the groups' lrs differ is the caller's business."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 2.0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        require(math.isfinite(self.lr) and self.lr > 0, "optim.lr", self.lr, "use a positive learning rate, e.g. optim.lr=1e-3")
        require(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "use 0 or a positive decay, e.g. 1e-4")
        require(self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs, "use 0 (no warm-up) or more epochs")
        require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", self.min_lr_ratio, "use a fraction of optim.lr in [0, 1]")


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
    partial: Optional[dict] = None  # set when stopped mid-epoch: batches done in epoch ``epoch`` and their sums
    epoch_rng: Optional[torch.Tensor] = None  # torch's RNG state as the current epoch began (a loader's shuffle draws from it)


class Callback(Protocol):
    def on_fit_start(self, state: LoopState) -> None: ...  # may restore a checkpoint into ``state``

    def on_epoch_end(self, state: LoopState) -> None: ...

    # optional: on_fit_end(state), after the last epoch this process runs;
    # on_interrupt(state), when a stop signal ends the fit mid-epoch (``state.partial`` set)


def step_loss(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, hook: Optional[StepHook], step: int, seed: int,
    label_smoothing: float, device: torch.device,
) -> tuple[torch.Tensor, float]:
    """One step's loss (and correct predictions, averaged over members): cross-entropy of
    the model as it stands, or with a ``hook`` the mean over the members it puts in place
    in turn (member ``i`` with ``seed + i``), a distilling member scored against the soft
    predictions of the last teacher before it instead of the labels."""
    loss, correct, teacher = torch.zeros((), device=device), 0.0, None
    members = hook.members(step) if hook is not None else _AS_IS
    for index, member in enumerate(members):
        if hook is not None:
            hook.put(model, member, seed + index)
        with autocast(device):
            logits = model(images).float()
            target = teacher if member.distill and teacher is not None else labels
            loss = loss + F.cross_entropy(logits, target, label_smoothing=label_smoothing)
        if member.teacher:
            teacher = logits.detach().softmax(-1)
        correct += (logits.argmax(-1) == labels).sum().item()
    if hook is not None:
        hook.release(model)
    return loss / len(members), correct / len(members)


def fit(
    model: nn.Module, task: TaskLoaders, optim: OptimConfig, trainer: TrainerConfig,
    splits: tuple[str, str] = ("train", "val"), callbacks: tuple[Callback, ...] = (), local: bool = False,
    groups: Optional[list[dict]] = None, hook: Optional[StepHook] = None,
) -> list[dict]:
    """Train ``model``'s trainable parameters on ``splits[0]``, evaluate on ``splits[1]``
    after every epoch; returns the history (one dict per epoch). ``groups``: AdamW's
    parameter groups, each with its own lr (default: every trainable parameter at
    ``optim.lr``); the warm-up and cosine schedule scale them all. ``hook``: what the model
    does around each step (``StepHook``); it is handed ``step_seed(seed, step)``, so resumed
    and multi-process runs draw the same sub-models. Under torchrun, gradients are averaged
    over ranks: N ranks × batch b == one process × batch N·b; ``local`` trains in this
    process alone even there (rank 0 making the embedded backbone while the others wait)."""
    train_split, eval_split = splits
    device = pick_device(trainer.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    sync = not local and distributed.world_size() > 1
    rank, world = (distributed.rank(), distributed.world_size()) if sync else (0, 1)
    steps_per_epoch = len(task.loader(train_split, train=True, rank=rank, world=world))
    total_steps = trainer.epochs * steps_per_epoch if trainer.max_steps is None else min(trainer.max_steps, trainer.epochs * steps_per_epoch)
    if groups is None:
        groups = [{"params": params, "lr": optim.lr, "name": "rest"}]
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay)
    schedule = warmup_cosine(optimizer, round(optim.warmup_epochs * steps_per_epoch), total_steps, optim.min_lr_ratio)
    state = LoopState(model, optimizer, schedule, trainer.epochs)
    for callback in callbacks:
        callback.on_fit_start(state)

    last_epoch = trainer.epochs if trainer.stop_after_epochs is None else min(trainer.epochs, state.epoch + trainer.stop_after_epochs)
    with StopRequest() as stop:
        _epochs(model, task, trainer, state, callbacks, hook, stop, (train_split, eval_split), total_steps, last_epoch, device, sync, rank, world)
    for callback in callbacks:
        if hasattr(callback, "on_fit_end"):
            callback.on_fit_end(state)
    return state.history


def _epochs(model: nn.Module, task: TaskLoaders, trainer: TrainerConfig, state: LoopState, callbacks: tuple[Callback, ...],
            hook: Optional[StepHook], stop: StopRequest, splits: tuple[str, str], total_steps: int, last_epoch: int,
            device: torch.device, sync: bool, rank: int, world: int) -> None:
    """The epochs of ``fit``; a stop signal ends them after the current step (checkpointed by
    the callbacks' ``on_interrupt``) with :class:`Stopped`."""
    train_split, eval_split = splits
    optimizer, schedule = state.optimizer, state.schedule
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for epoch in range(state.epoch, last_epoch):
        if state.step >= total_steps:
            break
        start = time.time()
        model.train()
        loss_sum, correct, seen, done = 0.0, 0, 0, 0
        loader = task.loader(train_split, train=True, seed=trainer.seed * 1000 + epoch, rank=rank, world=world)
        if state.partial:  # resumed from a mid-epoch stop: the epoch's own shuffle, past the batches already trained
            done, loss_sum, correct, seen = (state.partial[k] for k in ("batches", "loss_sum", "correct", "seen"))
            rng = torch.get_rng_state()  # the checkpoint's, for the steps to come
            if state.epoch_rng is not None:
                torch.set_rng_state(state.epoch_rng)  # a loader shuffling from torch's generator draws what it drew then
            batches = iter(loader)
            for _ in range(done):
                next(batches)
            torch.set_rng_state(rng)
            state.partial = None
        else:
            state.epoch_rng = torch.get_rng_state()
            batches = iter(loader)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{trainer.epochs}", unit="step", dynamic_ncols=True, disable=not distributed.is_main(),
                   initial=done, total=len(loader))
        for images, labels in bar:
            images, labels = images.to(device), labels.to(device)
            loss, right = step_loss(model, images, labels, hook, state.step, step_seed(trainer.seed, state.step), trainer.label_smoothing, device)
            correct += right
            loss_value = loss.item()
            stopping = float(stop.signum is not None)
            if sync:  # every rank stops together: on a non-finite loss, or a stop signal on any rank
                total_loss, stopping = distributed.all_reduce_sum([loss_value, stopping], device)
                mean_loss = total_loss / world
            else:
                mean_loss = loss_value
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
            done += 1
            if stopping:
                bar.close()
                state.partial = {"batches": done, "loss_sum": loss_sum, "correct": correct, "seen": seen}
                for callback in callbacks:
                    if hasattr(callback, "on_interrupt"):
                        callback.on_interrupt(state)
                signum = stop.signum or 15  # another rank's signal
                raise Stopped(f"stopped by {stop.name or 'a stop signal on another rank'} at epoch {epoch + 1} step {state.step}, "
                              "after writing a checkpoint of that step", signum)
            if state.step >= total_steps:
                break
        bar.close()
        if sync:
            loss_sum, correct, seen = distributed.all_reduce_sum([loss_sum, correct, seen], device)
        scores = {}
        if (epoch + 1) % trainer.eval_every == 0 or epoch + 1 == trainer.epochs or state.step >= total_steps:
            if hook is not None:
                hook.before_eval(model)
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
