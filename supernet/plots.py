"""Plots people look at: training curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .checkpoint import atomic_write  # noqa: E402

__all__ = ["plot_curves"]


def plot_curves(table: pd.DataFrame, path: Path, title: str) -> None:
    """Loss and accuracy per epoch, train against val."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for column, ax in (("loss", ax_loss), ("acc", ax_acc)):
        for split in ("train", "val"):
            key = f"{split}/{column}"
            if key in table:
                ax.plot(table["epoch"], table[key], marker="o", ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(column)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
