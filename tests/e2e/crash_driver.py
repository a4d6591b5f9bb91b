"""Kills smoke supernet trainings (or searches) at chosen points, like ``kill -9`` (the
process ends by ``os._exit``: no cleanup runs), for the crash tests.

    python crash_driver.py train|search <cache> <run_dir>=<kill> ... [-- overrides...]

Each ``<run_dir>=<kill>`` is one life, run in a forked child (the parent imports and
composes once, and runs no torch work itself, so forking is safe); a life in a dir that
exists resumes it. ``kill``: ``none``; ``event:<k>`` — the k-th event of that life, where
every optimizer step and search evaluation is one event and every file write two
(mid-write: the temp file cut to half before the rename; and just after the rename);
``write:<regex>:<n>`` — mid-write of the n-th write whose file name matches. Prints the
exit code of every life, one per line.
"""
import os
import re
import sys
from pathlib import Path

KILLED = 137


def life(job: str, cfg, run_dir: Path, kill: str) -> None:
    import torch

    events = {"n": 0, "writes": 0}

    def event() -> None:
        events["n"] += 1
        if kill == f"event:{events['n']}":
            os._exit(KILLED)

    def cut(src) -> None:
        Path(src).write_bytes(Path(src).read_bytes()[: Path(src).stat().st_size // 2])

    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if kill.startswith("write:"):
            _, pattern, nth = kill.split(":")
            if re.search(pattern, Path(dst).name):
                events["writes"] += 1
                if events["writes"] == int(nth):
                    cut(src)
                    os._exit(KILLED)
        if kill == f"event:{events['n'] + 1}":
            cut(src)
        event()
        real_replace(src, dst, *args, **kwargs)
        event()

    os.replace = replace
    real_step = torch.optim.AdamW.step
    torch.optim.AdamW.step = lambda self, *a, **k: (event(), real_step(self, *a, **k))[1]
    if job == "train":
        from glora.stages.train import train_supernet

        train_supernet(cfg, run_dir)
    else:
        import glora.search.evaluator as evaluator

        real_call = evaluator.Evaluator.__call__
        evaluator.Evaluator.__call__ = lambda self, layout: (event(), real_call(self, layout))[1]
        from glora.stages.search import run_search

        run_search(cfg, run_dir)


def main() -> None:
    args = sys.argv[1:]
    overrides = args[args.index("--") + 1 :] if "--" in args else []
    args = args[: args.index("--")] if "--" in args else args
    job, cache, *lives = args
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import glora.stages.search  # noqa: F401  (imported before forking)
    import glora.stages.train  # noqa: F401
    from glora.jobs.app import CONF_DIR

    composed = {}

    def cfg_for(run_dir: Path):  # composed once per (dir, fresh or resumed): lives run in forks, so none can change it
        resume = [f"resume={run_dir}"] if run_dir.is_dir() else []
        key = (str(run_dir), bool(resume))
        if key not in composed:
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                composed[key] = OmegaConf.to_object(compose(job, overrides=["experiment=smoke", f"paths.cache={cache}", *resume, *overrides]))
        return composed[key]

    import glora.data

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):  # the task each life builds (a search: its supernet's,
        data = OmegaConf.to_object(compose("train", overrides=["experiment=smoke", *(overrides if job == "train" else [])])).data
    if data.task in glora.data.TASKS:  # the smoke default), rendered once here: numpy only, no torch work before forking
        glora.data._rendered(data.task, data.seed, None, data.rank_images)
    for spec in lives:
        run_dir, kill = spec.rsplit("=", 1)
        cfg = cfg_for(Path(run_dir))  # in this process, before the fork: composed once per dir and mode
        pid = os.fork()
        if pid == 0:
            try:
                life(job, cfg, Path(run_dir), kill)
            except BaseException:
                import traceback

                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    main()
