"""Shared fixtures: a tiny timm ViT (fast on CPU) and its wrapping helpers."""
from __future__ import annotations

import os

import pytest
import timm
import torch

# One torch thread per test process (and in the jobs it starts): pytest -n N runs N workers
# on N cores, and a console script forked from a process whose OpenMP pool has run can hang
# in its first parallel region (a serial run hung in test_budget_sweep_and_report that way).
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)


def make_vit(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**TINY_VIT, **overrides}).eval()


@pytest.fixture
def tiny_vit():
    return make_vit()


@pytest.fixture
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# ---- jobs ----------------------------------------------------------------------------
import contextlib  # noqa: E402
import importlib.metadata  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from glora.jobs.app import CONF_DIR  # noqa: E402

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One embedded smoke backbone per test session, shared by every job test."""
    return tmp_path_factory.mktemp("cache")


def job_config(config_name: str, cache: Path, *overrides: str):
    """A job's config as its dataclass, composed like the CLI would (experiment=smoke)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=["experiment=smoke", f"paths.cache={cache}", *overrides])
    return OmegaConf.to_object(cfg)


def run_cli(script: str, *args: str, cwd: Path, timeout: float = 300, threads: int | None = None) -> subprocess.CompletedProcess:
    """A console script run as a user runs it (argv through Hydra, stdout / stderr, exit
    code), in a child forked from this test process: the child starts with torch, timm and
    Hydra imported (~8 s a call saved). ``threads``: torch's intra-op threads in the child
    (OMP_NUM_THREADS for a fresh process). ``GLORA_TESTS_SUBPROCESS=1`` (or no ``fork``) runs
    the installed script in a fresh process instead."""
    if not hasattr(os, "fork") or os.environ.get("GLORA_TESTS_SUBPROCESS"):
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        return subprocess.run([str(BIN / script), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)
    return start_cli(script, *args, cwd=cwd, threads=threads).wait(timeout)


class CliChild:
    """A console script running in a forked child (``start_cli``): its ``pid`` to signal,
    ``wait`` for its CompletedProcess."""

    def __init__(self, argv: list[str], pid: int, folder: tempfile.TemporaryDirectory):
        self.argv, self.pid, self._folder = argv, pid, folder
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code once the child has ended, else None."""
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float = 300) -> subprocess.CompletedProcess:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                raise subprocess.TimeoutExpired(self.argv, timeout)
            time.sleep(0.05)
        folder = Path(self._folder.name)
        out, err = (folder / "stdout").read_text(), (folder / "stderr").read_text()
        self._folder.cleanup()
        return subprocess.CompletedProcess(self.argv, self.returncode, out, err)


def start_cli(script: str, *args: str, cwd: Path, threads: int | None = None) -> CliChild:
    """``run_cli`` without waiting: the script starts in a forked child at once."""
    (entry,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == script]
    return start_forked(entry.load(), [script, *args], cwd, threads)


def start_forked(main, argv: list[str], cwd: Path, threads: int | None = None) -> CliChild:
    """``main()`` with ``sys.argv = argv`` in a forked child, as a process would run it."""
    script, *args = argv
    folder = tempfile.TemporaryDirectory()
    out, err = Path(folder.name) / "stdout", Path(folder.name) / "stderr"
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        if threads:
            torch.set_num_threads(threads)
        _run_forked(main, [script, *args], cwd, out, err)
    return CliChild([script, *args], pid, folder)


def _run_forked(main, argv: list[str], cwd: Path, out: Path, err: Path) -> None:
    code = 1
    try:
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        logging.root.handlers.clear()  # pytest's capture handlers belong to the parent
        GlobalHydra.instance().clear()
        os.chdir(cwd)
        sys.argv = argv
        main()
        code = 0
    except SystemExit as stop:  # what the interpreter would do with it
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


@pytest.fixture(scope="session")
def smoke_supernet(cache_dir, tmp_path_factory):
    """One trained smoke supernet (2 epochs, tiny backbone) for the search tests."""
    from glora.stages.train import train_supernet as train

    run = tmp_path_factory.mktemp("supernet")
    train(job_config("train", cache_dir), run)
    return run


# ---- markers -------------------------------------------------------------------------
#: Folders whose tests run jobs end to end (training, searching, subprocesses): all slow.
SLOW_FOLDERS = {"e2e", "benchmarks", "stages"}


#: Run first, longest folders first: the many short tests then fill both workers' last minutes
#: instead of one long end-to-end test running alone at the end.
FIRST = ("e2e", "benchmarks", "stages")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).parent.name in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)
    rank = {folder: i for i, folder in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).parent.name, len(FIRST)))  # stable: file order kept within
