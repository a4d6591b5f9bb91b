"""Hydra glue shared by every job: paths config, the run-dir resolver, and the thin
``main`` wrapper that turns a user-fixable error into one line and exit code 1."""
from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from spaces import LayoutError, SpaceError

from .distributed import is_main, quiet_other_ranks, rank, run_stamp
from .errors import JobError

__all__ = ["CONF_DIR", "CheckOutputDir", "PathsConfig", "ensure_writable", "run_job"]

log = logging.getLogger("glora")

#: conf/ beside the packages (found after ``pip install -e .`` from a clone).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# ``${first:${resume},runs/...}``: the first value that is not null (resume into an old run dir).
if not OmegaConf.has_resolver("first"):
    OmegaConf.register_new_resolver("first", lambda *values: next((v for v in values if v is not None), None))
# ``${run_stamp:%Y-%m-%d_%H-%M-%S}``: like Hydra's ``now``, but rank 0's time under torchrun.
if not OmegaConf.has_resolver("run_stamp"):
    OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True)  # one value per config, as Hydra's `now`


@dataclass
class PathsConfig:
    runs: str = "runs"  # every job's run dir lives under here
    cache: str = "runs/cache"  # the embedded backbone, pretrained once


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


def ensure_writable(folder: Path) -> None:
    """Fail at start, not at export, when the output dir cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise JobError(f"output dir {folder} is not writable ({err.strerror}); point paths.runs or hydra.run.dir elsewhere") from None


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
