"""`glora-train`: train the GLoRA supernet.

    glora-train                                   # embedded backbone, embedded `count` task
    glora-train data.task=texture space=mid
    glora-train resume=runs/train/<time>          # continue an interrupted run
    glora-train experiment=smoke
"""
import hydra
from omegaconf import DictConfig

from glora.run.distributed import entry_point
from glora.stages.train import train_supernet

from .app import CONF_DIR, run_job


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    return run_job(train_supernet, cfg, lambda metrics: metrics.get("val/acc", 0.0))


main = entry_point(hydra_main)  # the console script: torchrun-aware
