"""`glora-pipeline`: pretrain (cached) → supernet → search → retrain → merge → export.

    glora-pipeline                                           # embedded default, ≤ 5 min on 2 CPU cores
    glora-pipeline pipeline.tasks=[count,texture] pipeline.budgets=[5e3,2e4]
    glora-pipeline search=pareto pipeline.budgets=[5e3,1e4,2e4]   # one front search for all budgets
    glora-pipeline experiment=smoke
"""
import hydra
from omegaconf import DictConfig

from glora.stages.pipeline import run_pipeline

from .app import CONF_DIR, run_job


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="pipeline")
def main(cfg: DictConfig) -> float:
    return run_job(run_pipeline, cfg, lambda table: float(table.filter(like="_acc_merged").mean(axis=None)))
