"""`glora-search`: search per-layer A–E layouts of a trained supernet under a budget.

    glora-search supernet=runs/train/<time> search.budget=20000
    glora-search supernet=... search=random                   # or optuna, pareto; same evaluator and budget
    glora-search --multirun supernet=... search.budget=5e3,1e4,2e4   # a budget sweep
    glora-search resume=runs/search/<time>                     # continue a killed search
"""
import hydra
from omegaconf import DictConfig

from glora.run.distributed import entry_point
from glora.stages.search import run_search

from .app import CONF_DIR, run_job


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="search")
def hydra_main(cfg: DictConfig) -> float:
    return run_job(run_search, cfg, lambda metrics: metrics["best_val_acc"])


main = entry_point(hydra_main)  # the console script: torchrun-aware
