"""The engine as plain functions, for your own ``nn.Module`` and torch ``DataLoader``s, no
Hydra and no files unless you give a directory (``search_layout``, not ``search``: ``glora.search``
is the package of strategies and operators):

    supernet = glora.train_supernet(model, space, train_loader, val_loader, epochs=10)
    result = glora.search_layout(supernet, val_loader, budget=20_000)  # or budgets=[...]: a list of results
    tuned = glora.retrain(backbone, result.layout, train_loader, val_loader, epochs=10)
    plain = glora.merge(tuned)                                         # the original modules, W and b merged

Each runs the stage the jobs run: the same training loop (``glora.training.fit``) with the
supernet's step hook, the same evaluator, operators and strategies, the same parameter
groups. Any model whose targeted layers are ``nn.Linear`` (or 1×1 convolutions) works; the
trainable modules besides GLoRA are the classifier of a timm model (``get_classifier``),
or the ``modules_to_train`` you name. Loaders yield ``(images, labels)`` batches; they are
checked (one batch each) before anything trains. A SIGTERM or SIGUSR1 during training ends
it after the current step with ``glora.run.signals.Stopped`` (with ``run_dir``, after a
checkpoint of that step, which the same call resumes).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union

import pandas as pd
import torch
from torch import nn

from glora.run.device import pick_device
from glora.run.errors import require
from glora.search import Budget, BudgetError, Evaluator, LayoutOps, Record, get_strategy, run_generations, timed, top_k
from glora.spaces import Layout, Space
from glora.stages.config import GLoRAOptimConfig
from glora.stages.sampling import SamplingConfig
from glora.stages.search import history_table
from glora.stages.train import fit_supernet
from glora.supernet import is_wrapped, merge, set_layout, space_of, wrap
from glora.training import Checkpoint, RunFiles, TrainerConfig, fit, predict

__all__ = ["LoaderError", "SearchResult", "merge", "retrain", "search_layout", "train_supernet"]

#: A per-epoch hook: called with the epoch's row (epoch, step, train/loss, train/acc, val/acc, lr, seconds).
EpochHook = Callable[[dict], None]


class LoaderError(TypeError):
    """A DataLoader that does not yield ``(images, labels)`` batches."""


def check_loader(loader: Iterable, name: str) -> None:
    """One batch of ``loader`` must be ``(images, labels)``: a float tensor and an integer
    class-index tensor, one label per image."""
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise LoaderError(f"{name} is empty; give a DataLoader over at least one batch") from None
    except TypeError:
        raise LoaderError(f"{name} is a {type(loader).__name__}, not an iterable of batches; pass a torch DataLoader") from None
    fix = "make it yield (images, labels), e.g. DataLoader(torchvision.datasets.ImageFolder(root, transform=...))"
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        kind = f"a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list, dict)) else "")
        raise LoaderError(f"{name} yields {kind}, not (images, labels); {fix}")
    images, labels = batch
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise LoaderError(f"{name}: images are {type(images).__name__}"
                          f"{f' of {images.dtype}' if isinstance(images, torch.Tensor) else ''}, not a float tensor; "
                          "add transforms.ToTensor() (and Normalize) to the dataset")
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or labels.dim() != 1:
        raise LoaderError(f"{name}: labels are {type(labels).__name__}"
                          f"{f' of {labels.dtype}, shape {tuple(labels.shape)}' if isinstance(labels, torch.Tensor) else ''}; "
                          "give class indices, one integer per image (a 1-d long tensor)")
    if len(labels) != len(images):
        raise LoaderError(f"{name}: a batch has {len(images)} images but {len(labels)} labels; one label per image")


class _Loaders:
    """The training loop's ``TaskLoaders`` over the user's own loaders (the user's shuffling)."""

    def __init__(self, **loaders: Optional[Iterable]):
        self.loaders = {k: v for k, v in loaders.items() if v is not None}

    def loader(self, split: str, train: bool = False, seed: int = 0, rank: int = 0, world: int = 1) -> Iterable:
        return self.loaders[split]


@dataclass
class _EpochCallback:
    """Adapts a per-epoch hook to the loop's callback protocol."""

    hook: EpochHook

    def on_fit_start(self, state) -> None:
        pass

    def on_epoch_end(self, state) -> None:
        self.hook(dict(state.history[-1]))


def _trainable(model: nn.Module, modules_to_train: Optional[Sequence[str]]) -> tuple[str, ...]:
    if modules_to_train is not None:
        names = {n for n, _ in model.named_modules()}
        missing = [m for m in modules_to_train if m not in names]
        require(not missing, "modules_to_train", list(modules_to_train), f"name modules of the model; {missing} are not")
        return tuple(modules_to_train)
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        return tuple(n for n, m in model.named_modules() if m is head and n)
    return ()


def _check_loaders(train_loader: Iterable, val_loader: Optional[Iterable]) -> None:
    """Both loaders, before the model is touched."""
    check_loader(train_loader, "train_loader")
    if val_loader is not None:
        check_loader(val_loader, "val_loader")


def _setup(train_loader: Iterable, val_loader: Optional[Iterable], epochs: int, lr: float,
           optim: Optional[GLoRAOptimConfig], seed: int, device: str, hook: Optional[EpochHook], run_dir: Optional[Union[str, Path]],
           title: str, identity: dict) -> tuple[GLoRAOptimConfig, TrainerConfig, _Loaders, tuple, tuple[str, str]]:
    optim = replace(optim, lr=lr) if optim is not None else GLoRAOptimConfig(lr=lr)
    trainer = TrainerConfig(epochs=epochs, seed=seed, device=device)
    callbacks: list = []
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        callbacks += [Checkpoint(run_dir, identity), RunFiles(run_dir, title, {"identity": identity}, seed)]
    if hook is not None:
        callbacks.append(_EpochCallback(hook))
    loaders = _Loaders(train=train_loader, val=val_loader if val_loader is not None else train_loader)
    return optim, trainer, loaders, tuple(callbacks), ("train", "val")


def train_supernet(
    model: nn.Module, space: Space, train_loader: Iterable, val_loader: Optional[Iterable] = None, *, epochs: int = 10,
    lr: float = 1e-3, optim: Optional[GLoRAOptimConfig] = None, sampling: Optional[SamplingConfig] = None,
    modules_to_train: Optional[Sequence[str]] = None, vector_b: str = "mean", up_init: str = "kaiming", seed: int = 0,
    device: str = "auto", on_epoch_end: Optional[EpochHook] = None, run_dir: Optional[Union[str, Path]] = None,
) -> nn.Module:
    """Wrap ``model`` (in place) with GLoRA on ``space``'s target layers and train it as a
    weight-sharing supernet: every step trains one random layout (``sampling``: which
    layouts a step trains, ``glora-train``'s ``sampling`` group), the head alongside.
    Evaluates on ``val_loader`` (else ``train_loader``) after each epoch. ``optim``:
    AdamW settings and GLoRA's per-tensor steps (``lr`` overrides its lr). With ``run_dir``
    a checkpoint is written every epoch and a rerun resumes from it. Returns the model,
    in supernet mode, in eval mode."""
    require(epochs >= 1, "epochs", epochs, "train for at least 1 epoch")
    _check_loaders(train_loader, val_loader)
    torch.manual_seed(seed)
    if not is_wrapped(model):
        wrap(model, space, seed=seed, modules_to_train=_trainable(model, modules_to_train), up_init=up_init, vector_b=vector_b)
    identity = {"kind": "supernet", "space": space_of(model).to_dict(), "vector_b": vector_b}
    optim, trainer, loaders, callbacks, splits = _setup(train_loader, val_loader, epochs, lr, optim, seed, device,
                                                        on_epoch_end, run_dir, "supernet training", identity)
    fit_supernet(model, loaders, optim, trainer, sampling or SamplingConfig(), callbacks, splits)
    return model.eval()


@dataclass
class SearchResult:
    """One search's best layout (with ``metrics.val_acc``), its score and size, and every
    layout it evaluated (``history``: generation, strategy, layout_hash, trainable_params, val_acc, seconds)."""

    layout: Layout
    val_acc: float
    trainable_params: int
    budget: int
    history: pd.DataFrame
    records: list[Record]


def search_layout(
    supernet: nn.Module, val_loader: Iterable, *, budget: Optional[float] = None, budgets: Optional[Sequence[float]] = None,
    strategy: str = "evolution", population: int = 50, generations: int = 20, min_params: float = 0, seed: int = 0,
    device: str = "auto", progress: bool = True, run_dir: Optional[Union[str, Path]] = None, **settings: Any,
) -> Union[SearchResult, list[SearchResult]]:
    """Search ``supernet``'s layouts (a wrapped model from :func:`train_supernet`) for the
    best val accuracy on ``val_loader`` under ``budget`` trainable params, or one search per
    budget of ``budgets`` (then a list of results). ``strategy``: evolution, random, optuna
    or pareto, with its ``settings`` (e.g. ``mutation_prob``). With ``run_dir``, each
    search's ``layout-<budget>.json`` and ``history-<budget>.csv`` are written there."""
    require((budget is None) != (budgets is None), "budget / budgets", (budget, budgets), "give exactly one: budget=2e4 or budgets=[1e4, 2e4]")
    require(is_wrapped(supernet), "supernet", type(supernet).__name__, "pass the model train_supernet returned (GLoRA-wrapped)")
    check_loader(val_loader, "val_loader")
    wanted = [budget] if budget is not None else list(budgets)
    require(len(wanted) > 0, "budgets", wanted, "give at least one budget")
    space = space_of(supernet)
    template = Layout.sample(supernet, space, seed=0)
    target = pick_device(device)
    evaluate = Evaluator(supernet, val_loader, target, predict)
    results = []
    for value in wanted:
        require(isinstance(value, (int, float)) and value == value and 0 < value < float("inf"), "budget", value,
                "use a positive, finite number of trainable params, e.g. 2e4")
        try:
            s = get_strategy(strategy, budget=value, min_params=min_params, population=population, generations=generations, seed=seed, **settings)
            ops = LayoutOps(template, Budget(s.budget, s.min_params), s.max_tries)
        except BudgetError as err:
            raise BudgetError(str(err).replace("search.", "")) from None
        records = run_generations(s, ops, timed(evaluate), show_progress=progress)
        best = top_k(records, 1)[0]
        layout = ops.layout(best.layers, metrics={"val_acc": best.val_acc})
        history = history_table(records, strategy)
        if run_dir is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            layout.save(Path(run_dir) / f"layout-{s.budget}.json")
            history.to_csv(Path(run_dir) / f"history-{s.budget}.csv", index=False)
        results.append(SearchResult(layout, best.val_acc, best.params, s.budget, history, records))
    set_layout(supernet, None)
    return results[0] if budget is not None else results


def retrain(
    backbone: nn.Module, layout: Layout, train_loader: Iterable, val_loader: Optional[Iterable] = None, *, epochs: int = 10,
    lr: float = 1e-3, optim: Optional[GLoRAOptimConfig] = None, modules_to_train: Optional[Sequence[str]] = None,
    vector_b: str = "mean", up_init: str = "kaiming", seed: int = 0, device: str = "auto", on_epoch_end: Optional[EpochHook] = None,
    run_dir: Optional[Union[str, Path]] = None,
) -> nn.Module:
    """Train ``layout`` from the plain pretrained ``backbone`` (wrapped in place, the layout
    fixed, support tensors from zero): the retraining ``glora-retrain`` runs. Returns the
    trained, still wrapped model in eval mode; :func:`merge` makes it the plain backbone."""
    require(epochs >= 1, "epochs", epochs, "train for at least 1 epoch")
    require(not is_wrapped(backbone), "backbone", type(backbone).__name__,
            "pass the plain pretrained backbone (not the supernet): the layout trains from it")
    _check_loaders(train_loader, val_loader)
    torch.manual_seed(seed)
    wrap(backbone, layout.space, seed=seed, modules_to_train=_trainable(backbone, modules_to_train), up_init=up_init, vector_b=vector_b)
    bound = set_layout(backbone, layout)
    identity = {"kind": "retrain", "layout_hash": bound.hash, "vector_b": vector_b}
    optim, trainer, loaders, callbacks, splits = _setup(train_loader, val_loader, epochs, lr, optim, seed, device,
                                                        on_epoch_end, run_dir, f"retraining {bound.hash}", identity)
    fit(backbone, loaders, optim, trainer, splits, callbacks, groups=optim.groups(backbone))
    return backbone.eval()
