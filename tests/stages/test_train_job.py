"""glora-train: outputs, exact resume, and one clear error for each bad input."""
import json
import os
import signal
import time

import pandas as pd
import pytest
import torch
from conftest import job_config, run_cli, start_cli
from safetensors.torch import load_file

from glora.run.errors import CheckpointError, TrainingError
from glora.stages.train import train_supernet as train


def _weights(run_dir):
    return load_file(str(run_dir / "supernet.safetensors"))


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_smoke_train_writes_every_file(tmp_path, cache_dir):
    proc = run_cli("glora-train", "experiment=smoke", f"paths.cache={cache_dir}", f"paths.runs={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "train").iterdir()
    assert f"supernet written to {run}" in proc.stdout + proc.stderr  # the user is told where the files are
    for name in ("supernet.safetensors", "train_state.json", "supernet-state-0002.pt", "metrics.csv", "metrics.json", "train_curves.png"):
        assert (run / name).is_file(), name
    state = json.loads((run / "train_state.json").read_text())
    assert state["epoch"] == 2 and state["identity"]["space"]["ranks"] == [8, 4, 2, 1]
    table = pd.read_csv(run / "metrics.csv")
    assert list(table["epoch"]) == [1, 2] and {"train/loss", "val/acc"} <= set(table.columns)
    assert not (run / "supernet-state-0001.pt").exists()  # older states go once the newer pair is committed
    resumable = torch.load(run / "supernet-state-0002.pt", weights_only=True)
    assert {"optimizer", "scheduler", "torch_rng", "epoch"} <= set(resumable)


def test_resume_equals_uninterrupted(tmp_path, cache_dir):
    full, parts = tmp_path / "full", tmp_path / "parts"
    train(job_config("train", cache_dir, "trainer.epochs=3"), full)
    train(job_config("train", cache_dir, "trainer.epochs=3", "trainer.stop_after_epochs=1"), parts)
    assert json.loads((parts / "train_state.json").read_text())["epoch"] == 1
    train(job_config("train", cache_dir, "trainer.epochs=3", f"resume={parts}"), parts)
    _assert_same_weights(full, parts)
    assert pd.read_csv(full / "metrics.csv").drop(columns="seconds").equals(pd.read_csv(parts / "metrics.csv").drop(columns="seconds"))


def test_killed_run_resumes_to_the_same_weights(tmp_path, cache_dir):
    common = ["experiment=smoke", f"paths.cache={cache_dir}", "trainer.epochs=4", "data.batch_size=50"]
    full = tmp_path / "full"
    assert run_cli("glora-train", *common, f"hydra.run.dir={full}", cwd=tmp_path).returncode == 0
    killed = tmp_path / "killed"
    child = start_cli("glora-train", *common, f"hydra.run.dir={killed}", cwd=tmp_path)
    state = killed / "train_state.json"
    deadline = time.time() + 240
    while not state.is_file() and time.time() < deadline and child.poll() is None:
        time.sleep(0.01)
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)  # kill -9: no cleanup runs
    child.wait()
    epoch_at_kill = json.loads(state.read_text())["epoch"]
    assert epoch_at_kill < 4, "the run finished before it could be killed"
    proc = run_cli("glora-train", *common, f"resume={killed}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(state.read_text())["epoch"] == 4
    _assert_same_weights(full, killed)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, cache_dir, monkeypatch):
    run = tmp_path / "run"
    train(job_config("train", cache_dir, "trainer.epochs=3", "trainer.stop_after_epochs=1"), run)
    good = _weights(run)
    real = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr("glora.training.loop.F.cross_entropy", poisoned)
    with pytest.raises(TrainingError, match=r"loss is nan at step \d+ \(epoch 2\); training stopped. The last good checkpoint \(epoch 1\) is kept"):
        train(job_config("train", cache_dir, "trainer.epochs=3", f"resume={run}"), run)
    assert json.loads((run / "train_state.json").read_text())["epoch"] == 1
    after = _weights(run)
    assert all(torch.equal(good[k], after[k]) for k in good)


def test_checkpoint_for_another_space_or_model(tmp_path, cache_dir):
    run = tmp_path / "run"
    train(job_config("train", cache_dir, "trainer.epochs=2", "trainer.stop_after_epochs=1"), run)
    with pytest.raises(CheckpointError, match=r"is for space=.*\[8, 4, 2, 1\].* this run has space=.*\[2\]"):
        train(job_config("train", cache_dir, "trainer.epochs=2", "space=small", f"resume={run}"), run)
    with pytest.raises(CheckpointError, match=r"is for num_classes=6, but this run has num_classes=10"):
        train(job_config("train", cache_dir, "trainer.epochs=2", "data.task=digits", f"resume={run}"), run)


def test_corrupt_checkpoint(tmp_path, cache_dir):
    run = tmp_path / "run"
    train(job_config("train", cache_dir, "trainer.epochs=2", "trainer.stop_after_epochs=1"), run)
    blob = (run / "supernet.safetensors").read_bytes()
    (run / "supernet.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        train(job_config("train", cache_dir, "trainer.epochs=2", f"resume={run}"), run)
    flipped = bytearray(blob)
    flipped[-64] ^= 0xFF  # one tensor byte, header intact: must not load silently (it once ran a search on NaN weights)
    (run / "supernet.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum"):
        train(job_config("train", cache_dir, "trainer.epochs=2", f"resume={run}"), run)
    (run / "supernet.safetensors").write_bytes(blob)
    (run / "supernet-state-0001.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="supernet-state-0001.pt. is truncated or corrupt"):
        train(job_config("train", cache_dir, "trainer.epochs=2", f"resume={run}"), run)


def test_bad_input_on_the_command_line_is_one_clear_line(tmp_path, cache_dir):
    base = ["experiment=smoke", f"paths.cache={cache_dir}", f"paths.runs={tmp_path}"]

    def fails(*args):
        proc = run_cli("glora-train", *base, *args, cwd=tmp_path)
        assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    assert "data.root" in fails("data=vtab1k", f"data.root={tmp_path / 'missing'}")
    assert "is not a run dir to continue" in fails(f"resume={tmp_path / 'nothing'}")
    assert "trainer.epoch" in fails("trainer.epoch=3")  # typo: a wrong key fails at start
    assert "trainer.epochs" in fails("trainer.epochs=three")  # wrong type


def test_smoke_pretrain_writes_the_backbone_and_train_reuses_it(tmp_path):
    cache = tmp_path / "cache"
    proc = run_cli("glora-pretrain", "experiment=smoke", f"paths.cache={cache}", f"paths.runs={tmp_path}", "probe_tasks=[digits,orientation]", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "pretrain").iterdir()
    backbone = json.loads((run / "backbone.json").read_text())
    assert backbone["name"] == "vit_tiny_patch16_224" and backbone["kwargs"]["img_size"] == 32
    assert (run / "backbone.safetensors").is_file()
    probe = json.loads((run / "metrics.json").read_text())["linear_probe"]
    # the transfer is real even for the 30-step smoke backbone (measured: orientation 0.32 vs 0.18 at random
    # init, digits 0.23 vs 0.18); a backbone that was not trained, saved or loaded would probe like random init
    assert probe["orientation"]["pretrained"] >= probe["orientation"]["random_init"] + 0.08
    assert probe["mean"]["pretrained"] >= probe["mean"]["random_init"] + 0.05
    (cached,) = cache.iterdir()
    assert (cached / "backbone.safetensors").read_bytes() == (run / "backbone.safetensors").read_bytes()
    proc = run_cli("glora-train", "experiment=smoke", f"paths.cache={cache}", f"paths.runs={tmp_path}", "trainer.epochs=1", cwd=tmp_path)
    assert proc.returncode == 0 and "pretraining it once" not in proc.stdout + proc.stderr


def test_same_seed_same_weights_whether_the_backbone_was_cached_or_not(tmp_path, cache_dir):
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    train(job_config("train", cache_dir, "trainer.epochs=1"), warm)  # session cache: backbone already there
    train(job_config("train", tmp_path / "fresh-cache", "trainer.epochs=1"), cold)  # pretrains first, in-process
    _assert_same_weights(warm, cold)


def test_weights_of_another_parameterisation_are_refused(smoke_supernet, tmp_path):
    """A supernet trained before glora.vector_b existed (its vector / constant B meant the
    inputs' sum) is not silently read under the new meaning."""
    import shutil

    from glora.stages.train import load_trained

    old = tmp_path / "old"
    shutil.copytree(smoke_supernet, old)
    state = json.loads((old / "train_state.json").read_text())
    assert state["identity"]["parameterisation"] == "glora-param/2 vector_b=mean"
    del state["identity"]["parameterisation"]
    (old / "train_state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"parameterisation 'glora-param/1'.*retrain it"):
        load_trained(old)
    load_trained(smoke_supernet)  # the untouched run still loads


def test_resuming_with_other_lr_multipliers_is_one_clear_error(cache_dir, tmp_path):
    """Other optim.lr_mult values make other optimizer groups: the saved optimizer state
    cannot apply, and the library call says so instead of torch's ValueError."""
    run = tmp_path / "run"
    train(job_config("train", cache_dir, "trainer.epochs=2", "trainer.stop_after_epochs=1"), run)
    with pytest.raises(CheckpointError, match="other optimizer parameter groups.*its own config"):
        train(job_config("train", cache_dir, "trainer.epochs=2", "optim.lr_mult.A=1", "optim.lr_mult.D=1"), run)


def test_eval_every_skips_evaluations_without_changing_training(tmp_path, cache_dir):
    from glora.stages.train import train_supernet

    runs = {}
    for every in (1, 2):
        run = tmp_path / f"every{every}"
        train_supernet(job_config("train", cache_dir, "trainer.epochs=3", f"trainer.eval_every={every}"), run)
        runs[every] = run
    sparse = pd.read_csv(runs[2] / "metrics.csv")
    assert sparse["val/acc"].isna().tolist() == [True, False, False]  # epoch 2 (a multiple) and 3 (the last)
    dense = pd.read_csv(runs[1] / "metrics.csv")
    assert sparse["val/acc"].iloc[1:].tolist() == dense["val/acc"].iloc[1:].tolist()
    a, b = (load_file(runs[k] / "supernet.safetensors") for k in (1, 2))
    assert all(torch.equal(a[name], b[name]) for name in a)  # evaluating draws nothing training depends on
