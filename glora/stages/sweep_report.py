"""A search sweep's runs collected into one table and plot.

    glora-search --multirun supernet=runs/train/<time> search.budget=5e3,1e4,2e4
    glora-sweep-report runs/search/multirun/<time>

Writes ``sweep.csv``, ``sweep.md`` and ``sweep.png`` (best val accuracy against budget,
one line per strategy) into the sweep dir.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from glora.run.errors import JobError  # noqa: E402
from glora.run.io import atomic_write, write_text_atomic  # noqa: E402
from glora.run.plots import Drawn, save_figure  # noqa: E402
from glora.search.report import markdown_table  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["collect", "plot", "report_sweep"]


def collect(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per finished search run (a ``metrics.json`` beside a ``layout.json``) under ``sweep_dir``."""
    rows = []
    for metrics_file in sorted(Path(sweep_dir).rglob("metrics.json")):
        run = metrics_file.parent
        if not (run / "layout.json").is_file():
            continue
        metrics = json.loads(metrics_file.read_text())
        rows.append({"run": str(run.relative_to(sweep_dir)), **{k: metrics[k] for k in (
            "strategy", "budget", "min_params", "best_val_acc", "best_trainable_params", "evaluations", "seconds", "task")}})
    if not rows:
        raise JobError(f"no finished glora-search runs (metrics.json + layout.json) under {sweep_dir}")
    return pd.DataFrame(rows).sort_values(["strategy", "budget"]).reset_index(drop=True)


def plot(table: pd.DataFrame, path: Path) -> Drawn:
    """Best val accuracy against budget, one line per strategy."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, rows in table.groupby("strategy"):
        ax.plot(rows["budget"], rows["best_val_acc"], marker="o", label=strategy)
    ax.set_xscale("log")
    ax.set_xlabel("budget (max trainable params)")
    ax.set_ylabel("best val accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def report_sweep(sweep_dir: str | Path) -> pd.DataFrame:
    """Write sweep.csv, sweep.md and sweep.png into ``sweep_dir``; returns the table."""
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise JobError(f"sweep dir {str(sweep)!r} does not exist; point at a glora-search --multirun dir (runs/search/multirun/<time>)")
    table = collect(sweep)
    atomic_write(sweep / "sweep.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_text_atomic(sweep / "sweep.md", markdown_table(table) + "\n")
    plot(table, sweep / "sweep.png")
    log.info("%s\n\nwrote %s, sweep.md, sweep.png", table.to_string(index=False), sweep / "sweep.csv")
    return table
