"""Crash sequences, resume semantics, and bad input refused at start with one line."""
import os
import random
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import job_config, run_cli, start_cli, start_forked
from safetensors.torch import load_file

from glora.run.errors import CheckpointError, ConfigError, DataError, JobError

DRIVER = Path(__file__).with_name("crash_driver.py")
KILLED = 137


def _lives(job, cache, lives, *overrides):
    """Exit codes of ``lives`` ((run dir, kill) pairs) run one after another, by the crash
    driver forked from this process (its lives are its own forks: no kill reaches pytest)."""
    import crash_driver

    argv = [str(DRIVER), job, str(cache), *(f"{d}={k}" for d, k in lives), "--", *overrides]
    proc = start_forked(crash_driver.main, argv, cwd=Path(cache)).wait(600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes = [int(line) for line in proc.stdout.split()]
    assert len(codes) == len(lives) and set(codes) <= {0, KILLED}, proc.stderr[-3000:]
    return codes


def _drive(job, cache, run_dir, kill, *overrides):
    return _lives(job, cache, [(run_dir, kill)], *overrides)[0]


def _weights(run_dir):
    return load_file(str(run_dir / "supernet.safetensors"))


@pytest.mark.slow
def test_any_sequence_of_kills_resumes_to_the_uninterrupted_weights(tmp_path, cache_dir):
    """≥ 20 kill -9s at random moments — steps, inside writes (the temp file half written),
    right after renames — including two kills inside consecutive checkpoint writes (the
    weights of epoch 2, then the state of the re-done epoch 2): every resume continues,
    and the end is bit-identical to an uninterrupted run, with no temp file left."""
    args = ("trainer.epochs=12",)  # 12 epochs of 13 steps and 5 file writes: 23 events each
    run, rng = tmp_path / "killed", random.Random(0)
    kills = ["write:^supernet.safetensors$:2", "write:^supernet-state-0002.pt$:1"]  # the two consecutive writes
    kills += [f"event:{rng.randint(3, 30)}" for _ in range(26)]
    codes = _lives("train", cache_dir, [(tmp_path / "full", "none"), *((run, k) for k in kills), (run, "none")], *args)
    assert codes[0] == 0 and codes[-1] == 0
    assert codes[1:3] == [KILLED, KILLED] and sum(c == KILLED for c in codes) >= 20, codes
    full, got = _weights(tmp_path / "full"), _weights(run)
    assert full.keys() == got.keys() and all(torch.equal(full[k], got[k]) for k in full)
    assert not list(run.glob(".*.tmp")), list(run.glob(".*.tmp"))
    assert sorted(p.name for p in run.glob("supernet-state-*.pt")) == ["supernet-state-0012.pt"]
    assert pd.read_csv(run / "metrics.csv").equals(pd.read_csv(tmp_path / "full" / "metrics.csv").assign(
        seconds=pd.read_csv(run / "metrics.csv")["seconds"]))


def test_two_kills_in_consecutive_checkpoint_writes(tmp_path, cache_dir):
    """The sequence that once lost a run: kill inside epoch 2's weights write, then inside
    the re-done epoch 2's state write; resume must still continue from epoch 1."""
    run = tmp_path / "run"
    kills = ["write:^supernet.safetensors$:2", "write:^supernet-state-0002.pt$:1", "none"]
    assert _lives("train", cache_dir, [(run, k) for k in kills], "trainer.epochs=2") == [KILLED, KILLED, 0]
    assert (run / "metrics.json").is_file() and not list(run.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [(), ("search=pareto", "search.min_params=500", "search.targets=[1500,3000]")], ids=["evolution", "pareto"])
def test_a_search_killed_mid_generation_resumes_to_the_same_history(tmp_path, cache_dir, smoke_supernet, strategy):
    run = tmp_path / "killed"
    kills = ("event:12", "event:5", "write:^search_state.json$:1")  # mid-generation, again, then inside a state write
    kills += ("write:^front.csv$:1",) if strategy else ()  # the front search: inside writing its front, after the last generation
    codes = _lives("search", cache_dir, [(tmp_path / "full", "none"), *((run, k) for k in kills), (run, "none")],
                   f"supernet={smoke_supernet}", *strategy)
    assert codes == [0, *[KILLED] * len(kills), 0]
    cols = ["generation", "layout_hash", "trainable_params", "val_acc"]
    assert pd.read_csv(run / "history.csv")[cols].equals(pd.read_csv(tmp_path / "full" / "history.csv")[cols])
    assert (run / "layout.json").read_text() == (tmp_path / "full" / "layout.json").read_text()
    if strategy:  # the same front, point for point
        assert (run / "front.csv").read_text() == (tmp_path / "full" / "front.csv").read_text()
        files = lambda d: {p.name: p.read_text() for p in (d / "front").iterdir()}  # noqa: E731
        assert files(run) == files(tmp_path / "full") and files(run)


# ---- resume= is the run's own config --------------------------------------------------------------
def test_resume_restores_the_runs_own_config_and_refuses_changes(tmp_path, cache_dir):
    run = tmp_path / "run"
    common = [f"paths.cache={cache_dir}"]
    proc = run_cli("glora-train", "experiment=smoke", *common, "trainer.epochs=3", "trainer.stop_after_epochs=1",
                   f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("glora-train", f"resume={run}", "data.task=digits", cwd=tmp_path)  # changes what it computes
    assert proc.returncode == 1 and "data.task='digits' changes what the run" in proc.stdout + proc.stderr
    proc = run_cli("glora-train", f"resume={run}", f"hydra.run.dir={tmp_path / 'elsewhere'}", cwd=tmp_path)
    assert proc.returncode == 1 and "drop hydra.run.dir" in proc.stdout + proc.stderr
    proc = run_cli("glora-train", "experiment=smoke", *common, f"hydra.run.dir={run}", cwd=tmp_path)  # a second job, same dir
    assert proc.returncode == 1 and f"resume={run}" in proc.stdout + proc.stderr
    proc = run_cli("glora-train", f"resume={run}", cwd=tmp_path)  # no experiment=smoke, no trainer.epochs: the run's own
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = pd.read_json(run / "metrics.json", typ="series")
    assert metrics["epochs_done"] == 3 and metrics["complete"]
    proc = run_cli("glora-train", f"resume={run}", "trainer.epochs=4", cwd=tmp_path)  # extending is allowed
    assert proc.returncode == 0 and pd.read_json(run / "metrics.json", typ="series")["epochs_done"] == 4
    record = (run / "job.yaml").read_text()
    proc = run_cli("glora-train", f"resume={run}", "trainer.epochs=2", cwd=tmp_path)  # shortening would contradict its weights
    assert proc.returncode == 1 and "trainer.epochs=2 is below the 4" in proc.stdout + proc.stderr
    assert (run / "job.yaml").read_text() == record
    search = tmp_path / "search"
    proc = run_cli("glora-search", "experiment=smoke", f"supernet={run}", f"hydra.run.dir={search}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = (search / "layout.json").read_text()
    proc = run_cli("glora-search", f"resume={search}", cwd=tmp_path)  # the README's line, alone
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (search / "layout.json").read_text() == before  # a finished search stays finished (not 20 more generations)


def test_jobs_started_in_the_same_second_get_their_own_run_dirs(tmp_path, cache_dir):
    args = ["experiment=smoke", f"paths.cache={cache_dir}", f"paths.runs={tmp_path}", "trainer.epochs=1"]
    children = [start_cli("glora-train", *args, cwd=tmp_path) for _ in range(2)]  # two processes, started together
    assert all(c.wait(300).returncode == 0 for c in children)
    runs = list((tmp_path / "train").iterdir())
    assert len(runs) == 2 and all((r / "supernet.safetensors").is_file() for r in runs)


def test_a_run_killed_in_its_first_epoch_starts_over_on_resume(tmp_path, cache_dir):
    run = tmp_path / "run"
    assert _lives("train", cache_dir, [(run, "event:3"), (run, "none")], "trainer.epochs=1") == [KILLED, 0]  # before any checkpoint
    assert (run / "supernet-state-0001.pt").is_file()


# ---- bad values refused at start, one line naming the field and the fix -------------------------
BAD = [
    ("train", "trainer.epochs=0", "trainer.epochs"), ("train", "trainer.epochs=-3", "trainer.epochs"),
    ("train", "data.batch_size=0", "data.batch_size"), ("train", "data.eval_batch_size=0", "data.eval_batch_size"),
    ("train", "optim.lr=-1", "optim.lr"), ("train", "optim.lr=0", "optim.lr"), ("train", "optim.min_lr_ratio=2", "optim.min_lr_ratio"),
    ("train", "trainer.label_smoothing=1.5", "trainer.label_smoothing"), ("train", "data.num_workers=-1", "data.num_workers"),
    ("train", "trainer.max_steps=0", "trainer.max_steps"), ("train", "data.num_classes=1", "data.num_classes"),
    ("train", "pretrain.steps=0", "pretrain.steps"), ("train", "optim.lr_mult.A=0", "optim.lr_mult.A"), ("train", "optim.fixed_lr.D=-1", "optim.fixed_lr.D"),
    ("train", "optim.relative_step.A=0", "optim.relative_step.A"), ("train", "optim.relative_step.D=nan", "optim.relative_step.D"),
    ("train", "glora.up_init=normal", "glora.up_init"),
    ("search", "search.population=0", "search.population"), ("search", "search.generations=0", "search.generations"),
    ("search", "search.top_k=60", "search.top_k"), ("search", "search.mutation_prob=5", "search.mutation_prob"),
    ("search", "search.crossover=-1", "search.crossover"), ("search", "search.mutation=-2", "search.mutation"),
    ("search", "search.budget=-5", "search.budget"), ("search", "search.min_params=-1", "search.min_params"),
    ("search", "search.max_tries=0", "search.max_tries"), ("search", "search.rerank_lrs=[1e-3,0]", "search.rerank_lrs"),
    ("search", "search.rerank_lrs=[1e-3,1e-3]", "search.rerank_lrs"),
    ("retrain", "retrain.protocol=test", "retrain.protocol"), ("retrain", "retrain.budget=0", "retrain.budget"),
    ("pipeline", "pipeline.budgets=[]", "pipeline.budgets"), ("pipeline", "pipeline.tasks=[]", "pipeline.tasks"),
    ("pipeline", "pipeline.budgets=[-1]", "pipeline.budgets"), ("pipeline", "pipeline.supernet_epochs=0", "pipeline.supernet_epochs"),
]


@pytest.mark.parametrize("job, override, field", BAD)
def test_bad_values_are_refused_when_the_config_is_read(tmp_path, job, override, field):
    with pytest.raises(ConfigError, match=rf"^{field.replace('.', '[.]')}=.* cannot work: \S"):
        job_config(job, tmp_path, override)


def test_a_fixed_lr_and_a_relative_step_for_one_tensor_are_refused_together(tmp_path):
    with pytest.raises(ConfigError, match=r"^optim[.]relative_step[.]D=0.3 cannot work: optim[.]fixed_lr[.]D is set too"):
        job_config("train", tmp_path, "optim.relative_step.D=0.3", "optim.fixed_lr.D=0.01")


@pytest.mark.parametrize("override", ["trainer.epochs=0", "data.batch_size=0", "optim.lr=-1"])
def test_bad_values_on_the_command_line_are_one_line_before_any_work(tmp_path, cache_dir, override):
    proc = run_cli("glora-train", "experiment=smoke", f"paths.cache={cache_dir}", f"paths.runs={tmp_path}", override, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out and override.split("=")[0] in out
    assert "epoch 1" not in out  # refused at start, not after an epoch
    assert len([line for line in out.splitlines() if "ERROR" in line]) == 1


# ---- data checked before training --------------------------------------------------------------
def _folder(root, classes=2, corrupt=None):
    from PIL import Image

    for split in ("train", "val", "test"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (40 * c, 10 * i, 0)).save(root / split / f"c{c}" / f"{i}.png")
    if corrupt:
        (root / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return root


@pytest.mark.parametrize("where", ["train/c1/0.png", "test/c0/1.png"])
def test_a_corrupt_image_in_any_split_is_one_error_before_training(tmp_path, where):
    from glora.data import DataConfig, Preprocess, build_task

    root = _folder(tmp_path / "data", corrupt=where)
    with pytest.raises(DataError, match=rf"cannot decode image .*{where.split('/')[-1]}"):
        build_task(DataConfig(source="imagefolder", root=str(root)), Preprocess(16))


def test_single_class_data_is_refused(tmp_path):
    from glora.data import DataConfig, Preprocess, build_task

    with pytest.raises(DataError, match="single class"):
        build_task(DataConfig(source="imagefolder", root=str(_folder(tmp_path / "one", classes=1))), Preprocess(16))


# ---- environment and files ----------------------------------------------------------------------
def test_an_unwritable_cache_is_one_error_before_pretraining(tmp_path):
    from glora.backbones.embedded import PretrainConfig, ensure_embedded_backbone

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(JobError, match="paths.cache"):
        ensure_embedded_backbone(PretrainConfig(), blocker / "cache")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_one_error():
    from glora.run.device import pick_device

    with pytest.raises(JobError, match="trainer.device='cuda'.*no usable CUDA"):
        pick_device("cuda")


def test_written_files_follow_the_umask_and_temp_files_are_cleaned(tmp_path):
    from glora.run.io import remove_temp_files, write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    (tmp_path / ".a.json.abc.tmp").write_text("half")
    assert remove_temp_files(tmp_path) == [tmp_path / ".a.json.abc.tmp"] and (tmp_path / "a.json").is_file()


def test_a_corrupt_state_never_advises_unpickling(tmp_path):
    from glora.run.checkpoint import load_state

    (tmp_path / "s.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError) as err:
        load_state(tmp_path / "s.pt")
    assert "weights_only" not in str(err.value) and "corrupt" in str(err.value)


def test_a_job_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    """A few-KB billion-laughs job.yaml would take minutes and gigabytes to expand: refused from its events."""
    import time

    from glora.jobs.app import _read_record
    from glora.run.errors import JobError

    levels = ["a: &a [" + ",".join(['"lol"'] * 9) + "]"]
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
    record = tmp_path / "job.yaml"
    record.write_text("\n".join([*levels, "config: {task_name: train}", "choices: *i", ""]))
    start = time.monotonic()
    with pytest.raises(JobError, match=r"job.yaml holds a YAML anchor or tag \(line 1\).*start a new run without resume="):
        _read_record(record)
    assert time.monotonic() - start < 1
    record.write_text("config: !!python/object/apply:os.system ['true']\nchoices: {}\n")
    with pytest.raises(JobError, match="anchor or tag"):
        _read_record(record)
    record.write_text("config: [unclosed\n")
    with pytest.raises(JobError, match="is not valid YAML"):
        _read_record(record)
    record.write_text("choices: {}\n")
    with pytest.raises(JobError, match="lacks the config and choices"):
        _read_record(record)


def test_sigterm_checkpoints_and_says_how_to_resume(tmp_path, cache_dir):
    """A cluster's SIGTERM mid-run: exit 143 with one line naming the step and the resume command; resume goes on."""
    import signal

    run = tmp_path / "run"
    child = start_cli("glora-train", "experiment=smoke", f"paths.cache={cache_dir}", "trainer.epochs=40", f"hydra.run.dir={run}", cwd=tmp_path)
    deadline = time.monotonic() + 240
    while not (run / "supernet.safetensors").is_file() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGTERM)
    proc = child.wait(240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 143 and "Traceback" not in out, out[-2000:]
    assert "stopped by SIGTERM at epoch" in out and f"resume with: glora-train resume={run}" in out
    assert not list(run.glob("*.tmp*"))
    proc = run_cli("glora-train", f"resume={run}", "trainer.stop_after_epochs=1", cwd=tmp_path)
    assert proc.returncode == 0 and "resuming" in proc.stdout + proc.stderr, proc.stderr[-2000:]


def test_a_job_slurm_requeues_resumes_its_own_run_dir(tmp_path, cache_dir, monkeypatch):
    """Pre-empted and requeued (SLURM_RESTART_COUNT > 0), the same command line goes on in its dir instead of refusing it."""
    run = tmp_path / "run"
    args = ["experiment=smoke", f"paths.cache={cache_dir}", "trainer.epochs=2", "trainer.stop_after_epochs=1", f"hydra.run.dir={run}"]
    assert run_cli("glora-train", *args, cwd=tmp_path).returncode == 0
    proc = run_cli("glora-train", *args, cwd=tmp_path)  # not requeued: the dir holds a run
    assert proc.returncode == 1 and "already holds a run" in proc.stdout + proc.stderr
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    proc = run_cli("glora-train", *args, cwd=tmp_path)
    assert proc.returncode == 0 and "requeued by SLURM" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert pd.read_json(run / "metrics.json", typ="series")["epochs_done"] == 2
