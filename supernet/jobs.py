"""Hydra glue shared by every job: paths config, the run-dir resolver, and the thin
``main`` wrapper that turns a user-fixable error into one line and exit code 1."""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from spaces import LayoutError, SpaceError

from .errors import JobError

__all__ = ["PathsConfig", "run_job", "CONF_DIR", "ensure_writable", "CheckOutputDir"]

log = logging.getLogger("glora")

#: conf/ beside the packages (found after ``pip install -e .`` from a clone).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# ``${first:${resume},runs/...}``: the first value that is not null (resume into an old run dir).
if not OmegaConf.has_resolver("first"):
    OmegaConf.register_new_resolver("first", lambda *values: next((v for v in values if v is not None), None))


@dataclass
class PathsConfig:
    runs: str = "runs"  # every job's run dir lives under here
    cache: str = "runs/cache"  # the embedded backbone, pretrained once


def run_job(job: Callable[[Any, Path], Any], cfg: DictConfig) -> Any:
    """Convert the composed config to its dataclass, run ``job(cfg, run_dir)``; errors the
    user can fix are logged as one line and end the process with exit code 1."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return job(OmegaConf.to_object(cfg), run_dir)
    except (JobError, LayoutError, SpaceError) as err:
        log.error("%s", err)
        sys.exit(1)


def ensure_writable(folder: Path) -> None:
    """Fail at start, not at export, when the output dir cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
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
