"""Checkpoints: weights in safetensors (with a JSON identity in the header), optimizer /
scheduler / RNG state in a torch file read back with ``weights_only=True``. Every file is
written to a temp name and renamed, so an interrupted write never replaces a good file."""
from __future__ import annotations

import hashlib
import json
import pickle
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
           "checkpoint_key", "state_name", "tensors_digest", "DuplicateKeyError", "unique_keys", "weights_only_refused", "refused_message"]


class DuplicateKeyError(ValueError):
    """A JSON object that names one key twice (``json`` would silently keep the last)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} appears twice in one object")
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json.loads``: an object, or :class:`DuplicateKeyError`."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def weights_only_refused(err: BaseException) -> bool:
    """Whether a weights-only load raised ``err`` because the file holds Python objects it
    will not unpickle (rather than because the file is truncated): torch's
    ``UnpicklingError``, or the ``RuntimeError`` timm's ``load_state_dict`` rewraps it in."""
    text = str(err)
    return isinstance(err, (pickle.UnpicklingError, RuntimeError)) and any(
        s in text for s in ("Unsupported global", "non-allowlisted"))  # not a garbage file's "invalid load key"


def refused_message(path: Path | str) -> str:
    """Our one line for a file a weights-only load refuses; torch's own text advises
    ``weights_only=False``, which would run whatever code the file holds, so it is never shown."""
    return f"{path} holds Python objects that a weights-only load refuses; convert it to .safetensors or a plain state_dict"


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


def read_identity(path: Path, meta: dict[str, str] | None = None, what: str = "checkpoint") -> dict[str, Any]:
    """The ``glora`` header of a safetensors file this project wrote: one JSON object with
    no key twice, or one CheckpointError naming ``what`` and the file."""
    meta = _header(path) if meta is None else meta
    if "glora" not in meta:
        raise CheckpointError(f"{what} {str(path)!r} was not written by this project (no 'glora' header)")
    try:
        identity = json.loads(meta["glora"], object_pairs_hook=unique_keys)
    except DuplicateKeyError as err:
        raise CheckpointError(f"{what} {str(path)!r}: its 'glora' header has key {err.key!r} twice; re-export it") from None
    except ValueError as err:  # JSONDecodeError, or a number too large for an int
        raise CheckpointError(f"{what} {str(path)!r}: its 'glora' header is not JSON ({err}); re-export it") from None
    if not isinstance(identity, dict):
        raise CheckpointError(f"{what} {str(path)!r}: its 'glora' header is JSON but not an object "
                              f"({type(identity).__name__}); re-export it")
    return identity


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
        if weights_only_refused(err):  # (it advises weights_only=False, which would unpickle arbitrary code)
            raise CheckpointError(refused_message(path)) from None
        raise CheckpointError(
            f"training state {str(path)!r} is truncated or corrupt ({type(err).__name__}); it is not a state file this "
            "project wrote: delete the run dir's checkpoint files to start over"
        ) from None


# ---- a training run's checkpoint: weights + resumable state, crash-consistent ------------
WEIGHTS = "supernet.safetensors"


def checkpoint_key(progress: dict[str, Any]) -> str:
    """What a checkpoint's state file is named by: its epoch (``0003``), or for one written
    mid-epoch by a stop signal its epoch and step (``0003-step0145``): a key no other
    checkpoint of the run has, so writing it never overwrites the state the current weights need."""
    epoch = int(progress.get("epoch", 0))
    return f"{epoch:04d}" if not progress.get("partial") else f"{epoch:04d}-step{int(progress['step']):04d}"


def state_name(weights: str, key: str | int) -> str:
    """The resumable state of ``weights`` at ``key`` (``supernet-state-0003.pt``; an int is an epoch)."""
    return f"{Path(weights).stem}-state-{key if isinstance(key, str) else f'{key:04d}'}.pt"


def _states(run_dir: Path, weights: str) -> dict[str, Path]:
    pattern = re.compile(re.escape(Path(weights).stem) + r"-state-(\d+(?:-step\d+)?)\.pt")
    return {m.group(1): p for p in run_dir.glob(f"{Path(weights).stem}-state-*.pt") if (m := pattern.fullmatch(p.name))}


def save_checkpoint(
    run_dir: Path, model: nn.Module, identity: dict[str, Any], progress: dict[str, Any], state: dict[str, Any], weights: str = WEIGHTS
) -> None:
    """Write one checkpoint (an epoch's end, or a step a stop signal ended on) so that a kill
    at any instant, and any sequence of kills, leaves a resumable pair.

    Each checkpoint's state gets a file of its own (:func:`checkpoint_key`), written before
    the weights; the weights file (its header carries ``progress``: epoch, step, history,
    and a mid-epoch stop's ``partial``) is the commit point; only then are older states
    deleted. So the state of the weights' checkpoint always exists: a kill before the commit
    leaves the previous pair intact (plus an orphan state that the re-done work overwrites),
    a kill after it leaves the new pair.
    """
    key = checkpoint_key(progress)
    save_state(run_dir / state_name(weights, key), {**state, "epoch": progress["epoch"], "key": key})
    save_weights(run_dir / weights, model, {**identity, "progress": progress})
    for old, path in _states(run_dir, weights).items():
        if old != key:
            path.unlink(missing_ok=True)


def load_checkpoint(
    run_dir: Path, model: nn.Module, identity: dict[str, Any], weights: str = WEIGHTS
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Weights into ``model`` (after checking ``identity`` and the checksum), and the
    resumable state of the same checkpoint."""
    stored = load_weights(run_dir / weights, model, identity)
    progress = stored.get("progress") or {}
    key = checkpoint_key(progress)
    path = _states(run_dir, weights).get(key)
    if path is None:
        raise CheckpointError(
            f"{run_dir} has {weights} of epoch {progress.get('epoch')} but no {state_name(weights, key)}; "
            "cannot resume exactly: delete the run dir's checkpoint files to start over"
        )
    state = load_state(path)
    if state.get("epoch") != progress.get("epoch") or state.get("key", key) != key:
        raise CheckpointError(f"{path} holds the state of epoch {state.get('epoch')}, not {progress.get('epoch')}; cannot resume exactly")
    return progress, state
