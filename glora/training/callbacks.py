"""What a run keeps of a training loop: its checkpoint (restored at start, written every
epoch) and the files people read (metrics.csv, train_curves.png, train_state.json).
Rank 0 alone writes; every rank restores."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from glora.run import distributed
from glora.run.checkpoint import WEIGHTS, load_checkpoint, save_checkpoint
from glora.run.errors import CheckpointError
from glora.run.io import atomic_write, remove_temp_files, write_json_atomic
from glora.run.plots import plot_curves

from .loop import LoopState

__all__ = ["Checkpoint", "RunFiles"]

log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """Resume from ``run_dir`` when it holds a checkpoint; write one after every epoch, and
    after the step a stop signal ended the fit on."""

    run_dir: Path
    identity: dict[str, Any]  # what the weights must match to be loaded (model, classes, space, ...)
    weights: str = WEIGHTS

    def on_fit_start(self, state: LoopState) -> None:
        if distributed.is_main():
            remove_temp_files(self.run_dir)  # what writes a kill interrupted left behind
        if not (self.run_dir / self.weights).is_file():
            return
        progress, saved = load_checkpoint(self.run_dir, state.model, self.identity, self.weights)
        try:
            state.optimizer.load_state_dict(saved["optimizer"])
        except ValueError as err:  # other parameter groups: the run was started with another optim.lr_mult
            raise CheckpointError(f"{self.run_dir} was trained with other optimizer parameter groups ({err}); resume it with "
                                  "its own config (resume=<run dir> restores it) or start a new run dir") from None
        state.schedule.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        state.epoch, state.step, state.history = progress["epoch"], progress["step"], progress["history"]
        state.partial = progress.get("partial")  # a stop signal's mid-epoch checkpoint: the loop goes on from its step
        state.epoch_rng = saved.get("epoch_rng")
        log.info("resuming %s from epoch %d (step %d)", self.run_dir, state.epoch + (1 if state.partial else 0), state.step)

    def on_epoch_end(self, state: LoopState) -> None:
        self._save(state)

    def on_interrupt(self, state: LoopState) -> None:
        """A stop signal ended the fit after a step: checkpoint that step (``state.partial``)."""
        self._save(state)

    def _save(self, state: LoopState) -> None:
        if not distributed.is_main():
            return
        progress = {"epoch": state.epoch, "step": state.step, "history": state.history, "partial": state.partial}
        saved = {"optimizer": state.optimizer.state_dict(), "scheduler": state.schedule.state_dict(), "torch_rng": torch.get_rng_state(),
                 **({"epoch_rng": state.epoch_rng} if state.partial else {})}
        save_checkpoint(self.run_dir, state.model, self.identity, progress, saved, self.weights)


@dataclass
class RunFiles:
    """metrics.csv and train_state.json (progress + ``summary``: how to rebuild the model,
    the config) after every epoch; train_curves.png at the end of the fit and, during it,
    at most every ``plot_every_s`` seconds (a plot costs ~1 s, as much as a short epoch)."""

    run_dir: Path
    title: str
    summary: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    plot_every_s: float = 30.0
    _plotted_at: float = field(default=0.0, init=False, repr=False)
    _plotted_epoch: int = field(default=-1, init=False, repr=False)

    def on_fit_start(self, state: LoopState) -> None:
        self._plotted_at = time.monotonic()

    def on_epoch_end(self, state: LoopState) -> None:
        if not distributed.is_main():
            return
        table = pd.DataFrame(state.history)
        atomic_write(self.run_dir / "metrics.csv", lambda tmp: table.to_csv(tmp, index=False))
        if time.monotonic() - self._plotted_at >= self.plot_every_s:
            self._plot(state)
        write_json_atomic(self.run_dir / "train_state.json", {
            "epoch": state.epoch, "step": state.step, "history": state.history, "epochs": state.epochs, "seed": self.seed, **self.summary,
        })

    def on_fit_end(self, state: LoopState) -> None:
        if distributed.is_main() and state.history and self._plotted_epoch != state.epoch:
            self._plot(state)

    def _plot(self, state: LoopState) -> None:
        plot_curves(pd.DataFrame(state.history), self.run_dir / "train_curves.png", self.title)
        self._plotted_at, self._plotted_epoch = time.monotonic(), state.epoch
