"""The whole engine end to end, the main job.

pretrain (cached) → supernet training → search → retrain → merge → export, for each task
of ``pipeline.tasks`` and each budget of ``pipeline.budgets``; every stage's files sit in
its own folder of the one run dir (``train-<task>/``, ``search-<task>-<budget>/``,
``retrain-<task>-<budget>/``), and the final table lands in ``report.md``.

With a multi-objective strategy (``search=pareto``) each task is searched once, under the
largest budget (``search-<task>-front/``) and aimed at every budget (``search.targets``,
unless set), and each budget retrains the front's best point under it: one search instead
of one per budget.

    glora-pipeline                                           # embedded default, ≤ 5 min on 2 CPU cores
    glora-pipeline pipeline.tasks=[count,texture] pipeline.budgets=[5e3,2e4]
    glora-pipeline search=pareto pipeline.budgets=[5e3,1e4,2e4] search.min_params=2e3
    glora-pipeline experiment=smoke
    glora-pipeline pipeline.supernet_epochs=500 search.rerank=4 "search.rerank_lrs=[1e-3,3e-3,1e-2]"   # the recipe that beat LoRA at 4,096
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import pandas as pd

from glora.data import task_label
from glora.run.errors import JobError, param_count, require
from glora.run.io import atomic_write, write_json_atomic, write_text_atomic
from glora.search import SearchStrategy
from glora.search.report import markdown_table

from .config import narrow
from .front import best_under, front_layout, read_front
from .retrain import ExportConfig, RetrainConfig, RetrainJobConfig, retrain_merge_export
from .search import SearchJobConfig, run_search
from .train import TrainJobConfig, train_supernet

__all__ = ["PipelineConfig", "PipelineJobConfig", "run_pipeline"]

log = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    tasks: Optional[list[str]] = None  # null: data.task (for folders: the folder's name)
    budgets: list[float] = field(default_factory=lambda: [20000.0])
    supernet_epochs: Optional[int] = None  # null: trainer.epochs; the official recipe trains the supernet 500

    def __post_init__(self) -> None:
        require(self.supernet_epochs is None or self.supernet_epochs >= 1, "pipeline.supernet_epochs", self.supernet_epochs,
                "use null (trainer.epochs) or a positive number of epochs, e.g. pipeline.supernet_epochs=500")
        require(self.tasks is None or len(self.tasks) >= 1, "pipeline.tasks", self.tasks, "name at least one task, e.g. pipeline.tasks=[count]")
        require(len(self.budgets) >= 1, "pipeline.budgets", self.budgets, "give at least one positive budget, e.g. pipeline.budgets=[2e4]")
        self.budgets = [param_count(b, "pipeline.budgets", "give positive whole-number budgets, e.g. pipeline.budgets=[2e4]") for b in self.budgets]


@dataclass
class PipelineJobConfig(TrainJobConfig):
    """Supernet training's sections, plus the search, the retraining and what to loop over."""

    task_name: str = "pipeline"
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    search: SearchStrategy = field(default_factory=SearchStrategy)  # a strategy: search=evolution | random | optuna | pareto
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)  # export.peft=true: each retrained layout also as a PEFT adapter


def _searched_layouts(cfg: PipelineJobConfig, train_dir: Path, run_dir: Path, task: str) -> list[tuple[float, Path, float]]:
    """(budget, layout JSON, its search val acc) for each of ``pipeline.budgets``: one
    search per budget, or for a multi-objective strategy one front search under the
    largest budget and the front's best point under each."""
    budgets = cfg.pipeline.budgets
    # the re-ranking's stand-alone runs train as long as the retraining, not as the supernet
    searching = replace(cfg.search, rerank_epochs=cfg.search.rerank_epochs or cfg.trainer.epochs)
    if not searching.multi_objective:
        out = []
        for budget in budgets:
            log.info("== %s: search under %d params", task, budget)
            search_dir = run_dir / f"search-{task}-{budget}"
            found = run_search(narrow(cfg, SearchJobConfig, supernet=str(train_dir), search=replace(searching, budget=budget), resume=None),
                               search_dir)
            out.append((budget, search_dir / "layout.json", found["best_val_acc"]))
        return out
    search_dir = run_dir / f"search-{task}-front"
    log.info("== %s: one front search between %d and %d params for budgets %s", task, cfg.search.min_params, max(budgets),
             budgets)
    search = replace(searching, budget=max(budgets)).aim(list(budgets))  # aimed at the budgets it is read at
    run_search(narrow(cfg, SearchJobConfig, supernet=str(train_dir), search=search, resume=None), search_dir)
    front = read_front(search_dir)
    points = [best_under(front, budget, "pipeline.budgets") for budget in budgets]  # every budget checked before any retraining
    return [(budget, front_layout(search_dir, point), float(point["val_acc"])) for budget, point in zip(budgets, points)]


def run_pipeline(cfg: PipelineJobConfig, run_dir: Path) -> pd.DataFrame:
    low = [b for b in cfg.pipeline.budgets if b < cfg.search.min_params]
    if low:
        raise JobError(f"pipeline.budgets={cfg.pipeline.budgets} has {low[0]}, below search.min_params="
                       f"{cfg.search.min_params}: no layout can be searched under it; lower search.min_params or drop that budget")
    rows, labels = [], []
    started = time.time()
    for task in cfg.pipeline.tasks or [cfg.data.task]:
        data = replace(cfg.data, task=task)
        task = task_label(data)
        labels.append(task)
        train_dir = run_dir / f"train-{task}"
        log.info("== %s: supernet training -> %s", task, train_dir)
        supernet_trainer = replace(cfg.trainer, epochs=cfg.pipeline.supernet_epochs or cfg.trainer.epochs)
        train_supernet(narrow(cfg, TrainJobConfig, data=data, trainer=supernet_trainer, resume=None), train_dir)
        for budget, layout, search_val_acc in _searched_layouts(cfg, train_dir, run_dir, task):
            tag = f"{task}-{budget}"
            log.info("== %s: retrain %s, merge, export", tag, layout.relative_to(run_dir))
            done = retrain_merge_export(narrow(cfg, RetrainJobConfig, layout=str(layout), data=data,
                                               retrain=replace(cfg.retrain, budget=budget), resume=None), run_dir / f"retrain-{tag}")
            split = done["report_split"]
            rows.append({
                "task": task, "budget": budget, "trainable_params": done["trainable_params"],
                "search_val_acc": search_val_acc, f"{split}_acc_retrained": done[f"{split}_acc_unmerged"],
                f"{split}_acc_merged": done[f"{split}_acc"], "merged_max_logit_diff": done["merged_max_logit_diff"], "lr": done["lr"],
                "layout_hash": done["layout_hash"], "layout": str(layout.relative_to(run_dir)),
            })
    table = pd.DataFrame(rows)
    seconds = time.time() - started
    atomic_write(run_dir / "pipeline.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_json_atomic(run_dir / "metrics.json", {"rows": rows, "seconds": round(seconds, 1)})
    plots = [f"![{name}]({d.name}/{name}.png)" for d in sorted(run_dir.glob("search-*")) for name in ("pareto", "front", "layout_heatmap")
             if (d / f"{name}.png").is_file()]
    write_text_atomic(run_dir / "report.md", "\n".join([
        "# GLoRA pipeline", "",
        f"Tasks {labels}, budgets {cfg.pipeline.budgets}, {seconds:.0f} s in all. "
        "`search_val_acc`: the best layout's val accuracy on the supernet (`layout`: the searched layout it is, "
        "a search's layout.json or a front search's point under the budget); then the layout retrained from the "
        "pretrained backbone, before and after merging into the plain timm model.", "",
        markdown_table(table), "", *plots, "",
    ]))
    log.info("\n%s\n\nreport: %s (%.0f s)", table.drop(columns=["layout_hash", "layout"]).to_string(index=False), run_dir / "report.md", seconds)
    return table

