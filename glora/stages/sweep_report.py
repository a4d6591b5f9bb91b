"""A search sweep's runs collected into one table and plot.

    glora-search --multirun supernet=runs/train/<time> search.budget=5e3,1e4,2e4
    glora-sweep-report runs/search/multirun/<time>
    glora-sweep-report runs/search/multirun/<time> --front runs/search/<time>   # and a front search's front

Writes ``sweep.csv``, ``sweep.md`` and ``sweep.png`` (best val accuracy against budget,
one line per strategy; each front search given drawn as a step line on the same axes:
one front search against one search per budget) into the sweep dir.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from glora.run.errors import JobError  # noqa: E402
from glora.run.io import atomic_write, write_text_atomic  # noqa: E402
from glora.run.plots import Drawn, save_figure  # noqa: E402
from glora.search.report import markdown_table  # noqa: E402

from .front import read_front  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["collect", "missing", "plot", "report_sweep"]


def missing(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per sweep point (a Hydra job dir, ``.hydra/``) with no finished search: its
    overrides and why (the error it ended with, or none recorded: unfinished or killed)."""
    rows = []
    for hydra_dir in sorted(Path(sweep_dir).glob("*/.hydra")):
        run = hydra_dir.parent
        if (run / "metrics.json").is_file() and (run / "layout.json").is_file():
            continue
        try:
            overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []
        except (OSError, yaml.YAMLError):
            overrides = []
        try:
            why = json.loads((run / "failed.json").read_text())["error"]
        except (OSError, ValueError, KeyError, TypeError):
            why = "no result: unfinished or killed (resume it with resume=<its dir>)"
        rows.append({"run": str(run.relative_to(sweep_dir)), "overrides": " ".join(map(str, overrides)), "why": why})
    return pd.DataFrame(rows, columns=["run", "overrides", "why"])


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


def plot(table: pd.DataFrame, path: Path, fronts: dict[str, pd.DataFrame] | None = None) -> Drawn:
    """Best val accuracy against budget, one line per strategy; each of ``fronts`` (label
    -> front.csv table) as a step line: its best accuracy under any params count."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, rows in table.groupby("strategy"):
        ax.plot(rows["budget"], rows["best_val_acc"], marker="o", label=strategy)
    for label, front in (fronts or {}).items():
        ax.step(front["trainable_params"], front["val_acc"], where="post", ls="--", marker=".", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("budget (max trainable params); front: trainable params")
    ax.set_ylabel("best val accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def report_sweep(sweep_dir: str | Path, front_dirs: list[str | Path] = ()) -> pd.DataFrame:
    """Write sweep.csv, sweep.md and sweep.png into ``sweep_dir``, with the fronts of the
    front searches in ``front_dirs`` on the plot and in sweep.md; returns the table."""
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise JobError(f"sweep dir {str(sweep)!r} does not exist; point at a glora-search --multirun dir (runs/search/multirun/<time>)")
    table = collect(sweep)
    fronts: dict[str, pd.DataFrame] = {}
    for run in map(Path, front_dirs):
        label = f"front ({run.name})" if f"front ({run.name})" not in fronts else f"front ({run})"
        fronts[label] = read_front(run)
    atomic_write(sweep / "sweep.csv", lambda tmp: table.to_csv(tmp, index=False))
    sections = [f"\n## {label}\n\n{markdown_table(front)}" for label, front in fronts.items()]
    absent = missing(sweep)
    if len(absent):
        log.warning("%d sweep point(s) without a result:\n%s", len(absent), absent.to_string(index=False))
        sections.insert(0, f"\n## Points without a result\n\n{markdown_table(absent)}")
    write_text_atomic(sweep / "sweep.md", "\n".join([markdown_table(table), *sections, ""]))
    plot(table, sweep / "sweep.png", fronts)
    log.info("%s\n\nwrote %s, sweep.md, sweep.png", table.to_string(index=False), sweep / "sweep.csv")
    return table
