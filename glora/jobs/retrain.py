"""`glora-retrain`: retrain a layout from the pretrained backbone, merge, export plain timm.

    glora-retrain layout=runs/search/<time>/layout.json           # VTAB protocol: train+val, report test
    glora-retrain layout=my.json retrain.protocol=val            # train on train, report val
    glora-retrain layout=... retrain.budget=20000                # refuse a layout above a budget
"""
import hydra
from omegaconf import DictConfig

from glora.run.distributed import entry_point
from glora.stages.retrain import retrain_merge_export

from .app import CONF_DIR, run_job


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="retrain")
def hydra_main(cfg: DictConfig) -> float:
    return run_job(retrain_merge_export, cfg, lambda metrics: metrics[f"{metrics['report_split']}_acc"])


main = entry_point(hydra_main)  # the console script: torchrun-aware
