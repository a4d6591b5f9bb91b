"""Hydra glue every job shares: where the configs are, the schemas they are checked
against, the run-dir resolvers, and ``run_job``: config → dataclass → a stage function,
with a user-fixable error ending as one line and exit code 1."""
from __future__ import annotations

import contextlib
import fcntl
import importlib.resources
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch.distributed
import yaml
from hydra import compose
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm.contrib.logging import logging_redirect_tqdm

from glora.run.distributed import is_main, quiet_other_ranks, rank, run_stamp
from glora.run.errors import JobError
from glora.run.io import ensure_writable, remove_temp_files, write_json_atomic, write_text_atomic
from glora.run.signals import Stopped
from glora.search import STRATEGIES
from glora.spaces import LayoutError, SpaceError
from glora.stages.evaluate import EvaluateJobConfig
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
                     "retrain": RetrainJobConfig, "pipeline": PipelineJobConfig, "evaluate": EvaluateJobConfig}.items():
    _store.store(name=f"{_name}_schema", node=_node)
for _name, _node in STRATEGIES.items():
    _store.store(group="search", name=f"{_name}_schema", node=_node)


#: The record of what a run computes, written into its run dir at start; ``resume=`` reads it back.
RECORD = "job.yaml"
FAILED = "failed.json"  # a sweep point that ended in an error: {"error": the line the user saw}
#: Settings of this process, not of the run: a resumed run takes them from its own command line.
PROCESS = ("trainer.stop_after_epochs", "trainer.device", "data.num_workers")
#: Settings a resumed run may change: how long it goes on (plus the process's own).
LENGTHS = ("trainer.epochs", "search.generations")
RESUMABLE = (*LENGTHS, *PROCESS)


def run_job(job: Callable[[Any, Path], Any], cfg: DictConfig, score: Callable[[Any], Any] = lambda result: result) -> Any:
    """Run ``job(cfg, run_dir)`` on the composed config (the run's own, restored, under
    ``resume=``) as its dataclass, in a run dir no other job holds; errors the user can
    fix are logged as one line and end the process with exit code 1."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    quiet_other_ranks()
    try:
        with logging_redirect_tqdm(), _exclusive(run_dir):
            cfg, choices = _restore(cfg, run_dir)
            settings = OmegaConf.to_object(cfg)
            if is_main():
                remove_temp_files(run_dir)  # left by writes a kill interrupted
                record = {"choices": choices, "config": OmegaConf.to_container(cfg, resolve=True)}
                write_text_atomic(run_dir / RECORD, OmegaConf.to_yaml(record))
            return score(job(settings, run_dir))  # what a sweeper optimises (None for a failed sweep point)
    except Stopped as err:  # a scheduler's SIGTERM / SIGUSR1: the step is checkpointed, the run resumes from it
        if is_main():
            log.error("%s; resume with: glora-%s resume=%s", err, cfg.get("task_name"), run_dir)
        sys.exit(err.exit_code)
    except (JobError, LayoutError, SpaceError) as err:
        sweep = HydraConfig.get().mode == RunMode.MULTIRUN
        if is_main():  # the same config / data on every rank: one message, not one per rank
            log.error("%s", _one_line(err))
            if sweep:
                write_json_atomic(run_dir / FAILED, {"error": _one_line(err)})
        if sweep:  # one bad point does not end the sweep: the others run, and the sweep's end reports it
            return None
        sys.exit(1)
    except torch.distributed.DistError as err:  # another rank died or timed out: no hang, no stack trace
        log.error(
            "rank %d lost contact with the other ranks (%s); stopping. The last checkpoint in %s is intact: "
            "continue with resume=%s", rank(), str(err).splitlines()[0], run_dir, run_dir,
        )
        sys.exit(1)


def _one_line(err: Exception) -> str:
    """The error's own message: a DataLoader worker's error arrives wrapped in its trace."""
    text = str(err)
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return text


@contextlib.contextmanager
def _exclusive(run_dir: Path) -> Iterator[None]:
    """Hold the run dir's lock (rank 0) while the job runs: a second job pointed at the
    same dir fails at start instead of overwriting the first one's files."""
    if not is_main():
        yield
        return
    ensure_writable(run_dir)
    with open(run_dir / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobError(f"run dir {run_dir} is in use by another running job; wait for it, or give this one its own dir") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _leaves(cfg: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(cfg, dict):
        out: dict[str, Any] = {}
        for key, value in cfg.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out if cfg else {prefix[:-1]: {}}
    return {prefix[:-1]: cfg}


def _choices() -> dict[str, str]:
    """The config groups this run was composed from (``search: random``, ``experiment: smoke``, ...)."""
    choices = HydraConfig.get().runtime.choices
    return {g: c for g, c in choices.items() if c is not None and "@" not in g and not g.startswith("hydra")}


def _restore(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, dict[str, str]]:
    """Under ``resume=<dir>``: the run's recorded config (its groups and values), with only
    the overrides in ``RESUMABLE`` applied; any other override that changes what the run
    computes is refused, naming it. Without ``resume=``, a dir that already holds a run
    is refused."""
    resume = cfg.get("resume")
    record = run_dir / RECORD
    if resume is None and record.is_file() and os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0"):
        log.info("requeued by SLURM (SLURM_RESTART_COUNT=%s): resuming the run in %s", os.environ["SLURM_RESTART_COUNT"], run_dir)
        resume = str(run_dir)  # a pre-empted job started again with its own command line: it goes on where it stopped
    if resume is None:
        if record.is_file() and is_main():  # (rank 0 writes the record: the other ranks would see this run's own)
            raise JobError(f"run dir {run_dir} already holds a run; continue it with resume={run_dir}, or give this job a new dir")
        return cfg, _choices()
    resume_dir = Path(resume).expanduser()
    if not resume_dir.is_dir():
        raise JobError(f"resume={resume!r} is not a folder; point it at the run dir to continue (runs/<job>/<time>)")
    if resume_dir.resolve() != run_dir.resolve():
        raise JobError(f"resume={resume} continues that run in its own dir, but hydra.run.dir={run_dir}; drop hydra.run.dir")
    if not record.is_file():
        raise JobError(f"resume={resume} is not a run dir to continue (it holds no {RECORD}, which every run writes at start); "
                       "point it at an earlier run's dir, runs/<job>/<time>_<tag>, or start a new run without resume=")
    saved = _read_record(record)
    job = HydraConfig.get().job.config_name
    if saved.config.get("task_name") != cfg.get("task_name"):
        raise JobError(f"resume={resume} is a {saved.config.get('task_name')} run, not a {cfg.get('task_name')} run; "
                       f"resume it with glora-{saved.config.get('task_name')}")
    baseline = compose(job, overrides=[f"resume={resume}"])  # what this command line would give without its overrides
    was, now = _leaves(OmegaConf.to_container(baseline, resolve=True)), _leaves(OmegaConf.to_container(cfg, resolve=True))
    recorded = _leaves(OmegaConf.to_container(saved.config))
    changes = {key: now[key] for key in PROCESS if key in now and now[key] != recorded.get(key)}
    for key in sorted(set(now) | set(was)):
        if key == "resume" or now.get(key) == was.get(key) or now.get(key) == recorded.get(key):
            continue  # not overridden, or overridden to what the run already has
        if key not in RESUMABLE:
            raise JobError(
                f"resume: {key}={now.get(key)!r} changes what the run in {resume} computes (it ran with {key}={recorded.get(key)!r}); "
                f"drop the override to continue it, or start a new run without resume= (resumable: {', '.join(RESUMABLE)})"
            )
        changes[key] = now[key]
    for key in LENGTHS:
        if key in changes and isinstance(recorded.get(key), int) and isinstance(changes[key], int) and changes[key] < recorded[key]:
            raise JobError(f"resume: {key}={changes[key]} is below the {recorded[key]} the run in {resume} was set to, and its files may "
                           f"already hold more; a resumed run only goes on longer: drop the override, or start a new run without resume=")
    groups = [f"{group}={choice}" for group, choice in saved.choices.items()]
    restored = OmegaConf.merge(compose(job, overrides=[*groups, f"resume={resume}"]), saved.config)
    for key, value in changes.items():
        OmegaConf.update(restored, key, value, merge=False)
        log.info("resume: %s=%r (the run had %r)", key, value, recorded.get(key))
    restored.resume = resume
    return restored, dict(saved.choices)


#: A job.yaml is a few KB; this bounds what reading one may cost.
RECORD_MAX_BYTES = 1 << 20


def _read_record(record: Path) -> DictConfig:
    """A run's job.yaml, as this project writes it: plain YAML without aliases (an alias
    bomb of a few KB expands to gigabytes) or tags, at most ``RECORD_MAX_BYTES``; anything
    else is one JobError, before it is expanded."""
    fix = "it was not written by this project: start a new run without resume="
    if record.stat().st_size > RECORD_MAX_BYTES:
        raise JobError(f"{record} is {record.stat().st_size} bytes, more than a job.yaml holds; {fix}")
    try:
        text = record.read_text()
        for event in yaml.parse(text):  # events only: nothing is expanded or built
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) or getattr(event, "tag", None) not in (None, "!"):
                raise JobError(f"{record} holds a YAML {'alias' if isinstance(event, yaml.AliasEvent) else 'anchor or tag'} "
                               f"(line {event.start_mark.line + 1}), which job.yaml never does; {fix}")
        saved = OmegaConf.load(record)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as err:
        raise JobError(f"{record} is not valid YAML ({str(err).splitlines()[0]}); {fix}") from None
    if not isinstance(saved, DictConfig) or "config" not in saved or "choices" not in saved:
        raise JobError(f"{record} lacks the config and choices every job.yaml holds; {fix}")
    return saved


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

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """The sweep ran every point; any that failed are named here and the process exits 1."""
        failed = sorted(Path(config.hydra.sweep.dir).glob(f"*/{FAILED}"))
        if failed:
            lines = [f"{f.parent.name}: {json.loads(f.read_text()).get('error', '?')}" for f in failed]
            sys.exit(f"error: {len(failed)} sweep point(s) failed (the others finished; glora-sweep-report lists every point):\n  "
                     + "\n  ".join(lines))
