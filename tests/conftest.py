"""Shared fixtures: a tiny timm ViT (fast on CPU) and its wrapping helpers."""
from __future__ import annotations

import os

import pytest
import timm
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N runs N workers on N cores: one thread each (and in the jobs they start),
    # instead of N workers each spreading over every core.
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
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from hydra import compose, initialize_config_dir  # noqa: E402
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


def run_cli(script: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / script), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def smoke_supernet(cache_dir, tmp_path_factory):
    """One trained smoke supernet (2 epochs, tiny backbone) for the search tests."""
    from glora.stages.train import train_supernet as train

    run = tmp_path_factory.mktemp("supernet")
    train(job_config("train", cache_dir), run)
    return run
