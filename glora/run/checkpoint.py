"""Checkpoints: weights in safetensors (with a JSON identity in the header), optimizer /
scheduler / RNG state in a torch file read back with ``weights_only=True``. Every file is
written to a temp name and renamed, so an interrupted write never replaces a good file."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import CheckpointError
from .io import atomic_write

__all__ = ["WEIGHTS", "save_weights", "load_weights", "read_identity", "save_state", "load_state", "save_checkpoint", "load_checkpoint",
           "state_name", "tensors_digest"]


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_weights(path: Path, model: nn.Module, identity: dict[str, Any]) -> None:
    """``model.state_dict()`` as safetensors; ``identity`` (JSON) and a checksum of the
    tensors go in the header."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"glora": json.dumps(identity), "sha256": tensors_digest(tensors)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _header(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({err}); delete it or point at another run") from None


def read_identity(path: Path, meta: dict[str, str] | None = None) -> dict[str, Any]:
    meta = _header(path) if meta is None else meta
    if "glora" not in meta:
        raise CheckpointError(f"checkpoint {str(path)!r} was not written by this project (no 'glora' header)")
    return json.loads(meta["glora"])


def load_weights(path: Path, model: nn.Module, expect: dict[str, Any]) -> dict[str, Any]:
    """Load weights saved by :func:`save_weights` after checking that their identity
    (model, space, classes, ...) matches ``expect`` and that the tensors are the bytes
    that were written (checksum); returns the stored identity."""
    meta = _header(path)
    identity = read_identity(path, meta)
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
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({err})") from None
    recorded = meta.get("sha256")
    if recorded is not None and tensors_digest(state) != recorded:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: its tensors do not match the checksum written with them; "
                              "delete it (resume then starts from scratch) or point at another run")
    try:
        model.load_state_dict(state, strict=True)
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
    except Exception as err:  # pickle / zip errors of a truncated or foreign file; torch's own text is not shown
        raise CheckpointError(  # (it advises weights_only=False, which would unpickle arbitrary code)
            f"training state {str(path)!r} is truncated or corrupt ({type(err).__name__}); it is not a state file this "
            "project wrote: delete the run dir's checkpoint files to start over"
        ) from None


# ---- a training run's checkpoint: weights + resumable state, crash-consistent ------------
WEIGHTS = "supernet.safetensors"


def state_name(weights: str, epoch: int) -> str:
    """The resumable state of ``weights`` at ``epoch`` (``supernet-state-0003.pt``)."""
    return f"{Path(weights).stem}-state-{epoch:04d}.pt"


def _states(run_dir: Path, weights: str) -> dict[int, Path]:
    pattern = re.compile(re.escape(Path(weights).stem) + r"-state-(\d+)\.pt")
    return {int(m.group(1)): p for p in run_dir.glob(f"{Path(weights).stem}-state-*.pt") if (m := pattern.fullmatch(p.name))}


def save_checkpoint(
    run_dir: Path, model: nn.Module, identity: dict[str, Any], progress: dict[str, Any], state: dict[str, Any], weights: str = WEIGHTS
) -> None:
    """Write one epoch's checkpoint so that a kill at any instant, and any sequence of
    kills, leaves a resumable pair.

    Each epoch's state gets a file of its own, written before the weights; the weights
    file (its header carries ``progress``: epoch, step, history) is the commit point;
    only then are older states deleted. So the state of the weights' epoch always exists:
    a kill before the commit leaves the previous pair intact (plus an orphan state that
    the re-done epoch overwrites), a kill after it leaves the new pair.
    """
    epoch = progress["epoch"]
    save_state(run_dir / state_name(weights, epoch), {**state, "epoch": epoch})
    save_weights(run_dir / weights, model, {**identity, "progress": progress})
    for old, path in _states(run_dir, weights).items():
        if old != epoch:
            path.unlink(missing_ok=True)


def load_checkpoint(
    run_dir: Path, model: nn.Module, identity: dict[str, Any], weights: str = WEIGHTS
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Weights into ``model`` (after checking ``identity`` and the checksum), and the
    resumable state of the same epoch."""
    stored = load_weights(run_dir / weights, model, identity)
    progress = stored.get("progress") or {}
    path = _states(run_dir, weights).get(progress.get("epoch"))
    if path is None:
        raise CheckpointError(
            f"{run_dir} has {weights} of epoch {progress.get('epoch')} but no {state_name(weights, progress.get('epoch', 0))}; "
            "cannot resume exactly: delete the run dir's checkpoint files to start over"
        )
    state = load_state(path)
    if state.get("epoch") != progress.get("epoch"):
        raise CheckpointError(f"{path} holds the state of epoch {state.get('epoch')}, not {progress.get('epoch')}; cannot resume exactly")
    return progress, state
