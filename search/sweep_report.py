"""`glora-sweep-report`: collect the runs of a search sweep into one table and plot.

    glora-search --multirun supernet=runs/train/<time> search.budget=5e3,1e4,2e4
    glora-sweep-report runs/search/multirun/<time>

Writes ``sweep.csv``, ``sweep.md`` and ``sweep.png`` (best val accuracy against budget,
one line per strategy) into the sweep dir.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from supernet.checkpoint import atomic_write  # noqa: E402

from .report import markdown_table  # noqa: E402

log = logging.getLogger("glora.sweep")

__all__ = ["collect", "main"]


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
        raise FileNotFoundError(f"no finished glora-search runs (metrics.json + layout.json) under {sweep_dir}")
    return pd.DataFrame(rows).sort_values(["strategy", "budget"]).reset_index(drop=True)


def plot(table: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, rows in table.groupby("strategy"):
        ax.plot(rows["budget"], rows["best_val_acc"], marker="o", label=strategy)
    ax.set_xscale("log")
    ax.set_xlabel("budget (max trainable params)")
    ax.set_ylabel("best val accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="glora-sweep-report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", help="a glora-search --multirun dir (runs/search/multirun/<time>)")
    args = parser.parse_args(argv)
    sweep = Path(args.sweep_dir)
    try:
        table = collect(sweep)
    except FileNotFoundError as err:
        log.error("%s", err)
        sys.exit(1)
    atomic_write(sweep / "sweep.csv", lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(sweep / "sweep.md", lambda tmp: Path(tmp).write_text(markdown_table(table) + "\n"))
    plot(table, sweep / "sweep.png")
    log.info("%s\n\nwrote %s, sweep.md, sweep.png", table.to_string(index=False), sweep / "sweep.csv")
