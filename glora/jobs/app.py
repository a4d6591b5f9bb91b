"""Hydra glue every job shares: where the configs are, the schemas they are checked
against, the run-dir resolvers, and ``run_job``: config → dataclass → a stage function,
with a user-fixable error ending as one line and exit code 1."""
from __future__ import annotations

import importlib.resources
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from glora.run.distributed import is_main, quiet_other_ranks, rank, run_stamp
from glora.run.errors import JobError
from glora.run.io import ensure_writable
from glora.search import STRATEGIES
from glora.spaces import LayoutError, SpaceError
from glora.stages.pipeline import PipelineJobConfig
from glora.stages.pretrain import PretrainJobConfig
from glora.stages.retrain import RetrainJobConfig
from glora.stages.search import SearchJobConfig
from glora.stages.train import TrainJobConfig

__all__ = ["CONF_DIR", "CheckOutputDir", "run_job"]

log = logging.getLogger("glora")

#: The jobs' configs (the ``conf/`` folder, installed as the package data ``glora.conf``).
CONF_DIR = str(importlib.resources.files("glora.conf"))

# ``${first:${resume},runs/...}``: the first value that is not null (resume into an old run dir).
if not OmegaConf.has_resolver("first"):
    OmegaConf.register_new_resolver("first", lambda *values: next((v for v in values if v is not None), None))
# ``${run_stamp:%Y-%m-%d_%H-%M-%S}``: like Hydra's ``now``, but rank 0's time under torchrun.
if not OmegaConf.has_resolver("run_stamp"):
    OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True)  # one value per config, as Hydra's `now`

# Every schema a config is checked against: one per job, one per search strategy.
_store = ConfigStore.instance()
for _name, _node in {"pretrain": PretrainJobConfig, "train": TrainJobConfig, "search": SearchJobConfig,
                     "retrain": RetrainJobConfig, "pipeline": PipelineJobConfig}.items():
    _store.store(name=f"{_name}_schema", node=_node)
for _name, _node in STRATEGIES.items():
    _store.store(group="search", name=f"{_name}_schema", node=_node)


def run_job(job: Callable[[Any, Path], Any], cfg: DictConfig) -> Any:
    """Convert the composed config to its dataclass, run ``job(cfg, run_dir)``; errors the
    user can fix are logged as one line and end the process with exit code 1."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    quiet_other_ranks()
    try:
        return job(OmegaConf.to_object(cfg), run_dir)
    except (JobError, LayoutError, SpaceError) as err:
        if is_main():  # the same config / data on every rank: one message, not one per rank
            log.error("%s", err)
        sys.exit(1)
    except torch.distributed.DistError as err:  # another rank died or timed out: no hang, no stack trace
        log.error(
            "rank %d lost contact with the other ranks (%s); stopping. The last checkpoint in %s is intact: "
            "continue with resume=%s", rank(), str(err).splitlines()[0], run_dir, run_dir,
        )
        sys.exit(1)


class CheckOutputDir(Callback):
    """Hydra callback (conf/hydra/default.yaml): check the run / sweep dir before Hydra
    writes into it, so an unwritable one is one line, not a stack trace."""

    def _check(self, folder: str) -> None:
        try:
            ensure_writable(Path(folder))
        except JobError as err:
            sys.exit(f"error: {err}")

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir)
