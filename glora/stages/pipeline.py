"""The whole engine end to end, the main job.

pretrain (cached) → supernet training → search → retrain → merge → export, for each task
of ``pipeline.tasks`` and each budget of ``pipeline.budgets``; every stage's files sit in
its own folder of the one run dir (``train-<task>/``, ``search-<task>-<budget>/``,
``retrain-<task>-<budget>/``), and the final table lands in ``report.md``.

    glora-pipeline                                           # embedded default, ≤ 5 min on 2 CPU cores
    glora-pipeline pipeline.tasks=[count,texture] pipeline.budgets=[5e3,2e4]
    glora-pipeline experiment=smoke
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import pandas as pd

from glora.data import task_label
from glora.run.errors import require
from glora.run.io import atomic_write, write_json_atomic, write_text_atomic
from glora.search import SearchConfig
from glora.search.report import markdown_table

from .config import narrow
from .retrain import RetrainConfig, RetrainJobConfig, retrain
from .search import SearchJobConfig, run_search
from .train import TrainJobConfig, train_supernet

__all__ = ["PipelineConfig", "PipelineJobConfig", "run_pipeline"]

log = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    tasks: Optional[list[str]] = None  # null: data.task (for folders: the folder's name)
    budgets: list[float] = field(default_factory=lambda: [20000.0])

    def __post_init__(self) -> None:
        require(self.tasks is None or len(self.tasks) >= 1, "pipeline.tasks", self.tasks, "name at least one task, e.g. pipeline.tasks=[count]")
        require(len(self.budgets) >= 1 and all(b > 0 for b in self.budgets), "pipeline.budgets", self.budgets,
                "give at least one positive budget, e.g. pipeline.budgets=[2e4]")


@dataclass
class PipelineJobConfig(TrainJobConfig):
    """Supernet training's sections, plus the search, the retraining and what to loop over."""

    task_name: str = "pipeline"
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    search: SearchConfig = field(default_factory=SearchConfig)  # a strategy: search=evolution | random | optuna
    retrain: RetrainConfig = field(default_factory=RetrainConfig)


def run_pipeline(cfg: PipelineJobConfig, run_dir: Path) -> pd.DataFrame:
    rows, labels = [], []
    started = time.time()
    for task in cfg.pipeline.tasks or [cfg.data.task]:
        data = replace(cfg.data, task=task)
        task = task_label(data)
        labels.append(task)
        train_dir = run_dir / f"train-{task}"
        log.info("== %s: supernet training -> %s", task, train_dir)
        train_supernet(narrow(cfg, TrainJobConfig, data=data, resume=None), train_dir)
        for budget in cfg.pipeline.budgets:
            tag = f"{task}-{int(budget)}"
            log.info("== %s: search under %d params", task, int(budget))
            found = run_search(narrow(cfg, SearchJobConfig, supernet=str(train_dir), search=replace(cfg.search, budget=budget), resume=None),
                               run_dir / f"search-{tag}")
            log.info("== %s: retrain, merge, export", tag)
            done = retrain(narrow(cfg, RetrainJobConfig, layout=str(run_dir / f"search-{tag}" / "layout.json"), data=data,
                                  retrain=replace(cfg.retrain, budget=budget), resume=None), run_dir / f"retrain-{tag}")
            split = done["report_split"]
            rows.append({
                "task": task, "budget": int(budget), "trainable_params": done["trainable_params"],
                "search_val_acc": found["best_val_acc"], f"{split}_acc_retrained": done[f"{split}_acc_unmerged"],
                f"{split}_acc_merged": done[f"{split}_acc"], "merged_max_logit_diff": done["merged_max_logit_diff"],
                "layout_hash": done["layout_hash"],
            })
    table = pd.DataFrame(rows)
    seconds = time.time() - started
    atomic_write(run_dir / "pipeline.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_json_atomic(run_dir / "metrics.json", {"rows": rows, "seconds": round(seconds, 1)})
    plots = [f"![{name}]({d}/{name}.png)" for d in sorted(p.name for p in run_dir.glob("search-*")) for name in ("pareto", "layout_heatmap")]
    write_text_atomic(run_dir / "report.md", "\n".join([
        "# GLoRA pipeline", "",
        f"Tasks {labels}, budgets {[int(b) for b in cfg.pipeline.budgets]}, {seconds:.0f} s in all. "
        "`search_val_acc`: the best layout's val accuracy on the supernet; then the layout retrained from the "
        "pretrained backbone, before and after merging into the plain timm model.", "",
        markdown_table(table), "", *plots, "",
    ]))
    log.info("\n%s\n\nreport: %s (%.0f s)", table.drop(columns=["layout_hash"]).to_string(index=False), run_dir / "report.md", seconds)
    return table

