"""Plots people look at: training curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .io import atomic_write  # noqa: E402

__all__ = ["plot_curves", "save_figure"]

#: What a figure drew: axes title or y label -> line or collection label -> (x, y).
Drawn = dict[str, dict[str, tuple[list[float], list[float]]]]


def save_figure(fig, path: Path) -> Drawn:
    """Lay out, write atomically as PNG, close; returns every line and scatter the figure
    drew (read back from its axes), so callers and tests can check what a plot shows."""
    drawn: Drawn = {}
    for ax in fig.axes:
        series = drawn.setdefault(ax.get_ylabel() or ax.get_title(), {})
        for line in ax.get_lines():
            series[line.get_label()] = ([float(v) for v in line.get_xdata()], [float(v) for v in line.get_ydata()])
        for collection in ax.collections:
            offsets = collection.get_offsets()
            if len(offsets):
                series[collection.get_label()] = ([float(v) for v in offsets[:, 0]], [float(v) for v in offsets[:, 1]])
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return drawn


def plot_curves(table: pd.DataFrame, path: Path, title: str) -> Drawn:
    """Loss and accuracy per epoch: train against whatever split the run evaluates
    (``val`` in supernet training, ``test`` under the VTAB retrain protocol)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    splits = [c.split("/")[0] for c in table.columns if c.endswith("/loss")]
    for column, ax in (("loss", ax_loss), ("acc", ax_acc)):
        for split in splits:
            key = f"{split}/{column}"
            if key in table:
                ax.plot(table["epoch"], table[key], marker="o", ms=3, label=split)

        ax.set_xlabel("epoch")
        ax.set_ylabel(column)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save_figure(fig, path)
