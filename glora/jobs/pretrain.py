"""`glora-pretrain`: build (and cache) the embedded default backbone.

    glora-pretrain                      # the default recipe (≤ 3 min on 2 CPU cores)
    glora-pretrain experiment=smoke     # a tiny recipe, seconds
"""
import hydra
from omegaconf import DictConfig

from glora.stages.pretrain import run_pretrain

from .app import CONF_DIR, run_job


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="pretrain")
def main(cfg: DictConfig) -> float:
    return run_job(run_pretrain, cfg, lambda metrics: metrics["source_val_acc"])
