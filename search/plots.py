"""Search plots: best-so-far curve, accuracy vs params with the Pareto front, a front
search's every evaluated layout by generation with its front, layout heatmap."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from glora.run.plots import Drawn, save_figure  # noqa: E402
from glora.spaces import TENSORS, Layout  # noqa: E402

from .pareto import staircase  # noqa: E402

__all__ = ["plot_search_curve", "plot_pareto", "plot_front", "plot_layout_heatmap", "pareto_front"]


def plot_search_curve(history: pd.DataFrame, path: Path) -> Drawn:
    """Best validation accuracy so far against the number of evaluations, per strategy."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, rows in history.groupby("strategy", sort=False):
        ax.plot(np.arange(1, len(rows) + 1), rows["val_acc"].cummax().to_numpy(), label=strategy)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best val accuracy so far")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def pareto_front(history: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``history`` (one per evaluated layout, in evaluation order) on the front
    (``pareto.staircase``), by params."""
    points = list(zip(history["trainable_params"].astype(float), history["val_acc"].astype(float)))
    return history.iloc[staircase(points)]


def plot_pareto(history: pd.DataFrame, path: Path, budget: int | None = None) -> Drawn:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(history["trainable_params"], history["val_acc"], s=10, alpha=0.4, label="evaluated")
    front = pareto_front(history)
    ax.step(front["trainable_params"], front["val_acc"], where="post", color="C3", marker="o", ms=4, label="Pareto front")
    if budget is not None:
        ax.axvline(budget, color="grey", ls="--", lw=1, label="budget")
    ax.set_xlabel("trainable params (support tensors)")
    ax.set_ylabel("val accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_front(history: pd.DataFrame, front: pd.DataFrame, path: Path, budget: int, min_params: int = 0) -> Drawn:
    """Every evaluated layout (coloured by generation, so the front's progress shows) and
    ``front`` (trainable_params, val_acc) drawn through them as a step line: the best
    accuracy reachable at each params count between ``min_params`` and ``budget``."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    points = ax.scatter(history["trainable_params"], history["val_acc"], c=history["generation"], cmap="viridis", s=10, alpha=0.6,
                        label="evaluated")
    fig.colorbar(points, ax=ax, label="generation")
    ax.step(front["trainable_params"], front["val_acc"], where="post", color="C3", marker="o", ms=4, label="front")
    for value, name in ((min_params, "min_params"), (budget, "budget")):
        if value:
            ax.axvline(value, color="grey", ls="--" if name == "budget" else ":", lw=1, label=name)
    ax.set_xlabel("trainable params (support tensors)")
    ax.set_ylabel("val accuracy")
    ax.set_title(f"{len(front)} front points of {len(history)} evaluated layouts", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_layout_heatmap(layout: Layout, path: Path) -> Drawn:
    """Layer × tensor, coloured by option kind, LoRA ranks annotated."""
    kinds = ["none", "constant", "vector", "lora"]
    names = list(layout.layers)
    grid = np.array([[kinds.index(o.kind) for o in layout.layers[n]] for n in names])
    fig, ax = plt.subplots(figsize=(4.5, 0.28 * len(names) + 1.2))
    cmap = ListedColormap(["#eeeeee", "#9ecae1", "#3182bd", "#e6550d"])
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=3.5, aspect="auto")
    for i, n in enumerate(names):
        for j, o in enumerate(layout.layers[n]):
            if o.kind == "lora":
                ax.text(j, i, str(o.rank), ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks(range(len(TENSORS)), TENSORS)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(4)]
    ax.legend(handles, ["none", "constant", "vector", "LoRA (rank)"], loc="upper center", bbox_to_anchor=(0.5, -0.02 - 1.0 / len(names)), ncol=2, fontsize=7)
    ax.set_title(f"layout {layout.hash}: {layout.trainable_params:,} params", fontsize=9)
    return save_figure(fig, path)
