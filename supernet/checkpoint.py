"""Checkpoints: weights in safetensors (with a JSON identity in the header), optimizer /
scheduler / RNG state in a torch file read back with ``weights_only=True``. Every file is
written to a temp name and renamed, so an interrupted write never replaces a good file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import CheckpointError

__all__ = ["atomic_write", "save_weights", "load_weights", "read_identity", "save_state", "load_state"]


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Run ``write(tmp_path)`` then rename onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(path: Path, model: nn.Module, identity: dict[str, Any]) -> None:
    """``model.state_dict()`` as safetensors; ``identity`` (JSON) goes in the header."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"glora": json.dumps(identity)}))


def read_identity(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({err}); delete it or point at another run") from None
    if "glora" not in meta:
        raise CheckpointError(f"checkpoint {str(path)!r} was not written by this project (no 'glora' header)")
    return json.loads(meta["glora"])


def load_weights(path: Path, model: nn.Module, expect: dict[str, Any]) -> dict[str, Any]:
    """Load weights saved by :func:`save_weights` after checking that their identity
    (model, space, classes, ...) matches ``expect``; returns the stored identity."""
    identity = read_identity(path)
    for key, want in expect.items():
        have = identity.get(key)
        if have != want:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is for {key}={json.dumps(have)}, but this run has {key}={json.dumps(want)}; "
                "point at a checkpoint of this model and space, or change the config to match it"
            )
    try:
        with safe_open(str(path), framework="pt") as handle:
            state = {k: handle.get_tensor(k) for k in handle.keys()}
        model.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({err})") from None
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this model: {str(err).splitlines()[0]}") from None
    return identity


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any]:
    """Optimizer / scheduler / RNG state, never unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"training state {str(path)!r} does not exist") from None
    except Exception as err:  # pickle / zip errors of a truncated or foreign file
        raise CheckpointError(f"training state {str(path)!r} is truncated or corrupt ({type(err).__name__}: {err})") from None


# ---- a training run's checkpoint: weights + resumable state, crash-consistent ------------
WEIGHTS, STATE, PREVIOUS_STATE = "supernet.safetensors", "train_state.pt", "train_state.prev.pt"


def save_checkpoint(
    run_dir: Path, model: nn.Module, identity: dict[str, Any], progress: dict[str, Any], state: dict[str, Any], weights: str = WEIGHTS
) -> None:
    """Write one epoch's checkpoint so that a kill at any instant leaves a resumable pair.

    The weights file is the commit point: its header carries ``progress`` (epoch, step,
    history). The state of the epoch before is kept as ``train_state.prev.pt`` until the
    new weights are in place, so weights always have a state file of their own epoch.
    """
    if (run_dir / STATE).is_file():
        os.replace(run_dir / STATE, run_dir / PREVIOUS_STATE)
    save_state(run_dir / STATE, {**state, "epoch": progress["epoch"]})
    save_weights(run_dir / weights, model, {**identity, "progress": progress})


def load_checkpoint(
    run_dir: Path, model: nn.Module, identity: dict[str, Any], weights: str = WEIGHTS
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Weights into ``model`` (after checking ``identity``), and the matching resumable state."""
    stored = load_weights(run_dir / weights, model, identity)
    progress = stored.get("progress") or {}
    for name in (STATE, PREVIOUS_STATE):
        if (run_dir / name).is_file():
            state = load_state(run_dir / name)
            if state.get("epoch") == progress.get("epoch"):
                return progress, state
    raise CheckpointError(
        f"{run_dir} has weights of epoch {progress.get('epoch')} but no {STATE} of that epoch; cannot resume exactly"
    )
