"""`glora-evaluate`: score a finished model on test sets, without training.

    glora-evaluate evaluate.run=runs/retrain/<time>                               # its own task's test split
    glora-evaluate evaluate.run=runs/retrain/<time> "evaluate.targets=[mnist,mnist@blur:3,sklearn_digits]"
    glora-evaluate evaluate.run=runs/retrain/<time>/model.safetensors data.task=mnist data.shift=rotation:5
    glora-evaluate evaluate.adapter=runs/retrain/<time>/adapter.safetensors       # on the `model` config's backbone
"""
import hydra
from omegaconf import DictConfig

from glora.stages.evaluate import run_evaluate

from .app import CONF_DIR, run_job


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> float:
    return run_job(run_evaluate, cfg, lambda table: float(table["acc"].mean()))
