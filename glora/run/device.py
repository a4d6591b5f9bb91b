"""Which device a job runs on, and at what precision."""
from __future__ import annotations

import contextlib

import torch

from .errors import JobError

__all__ = ["autocast", "pick_device"]


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present (this process's GPU under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise JobError(f"trainer.device={name!r} is not a device; use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise JobError(f"trainer.device={name!r} but this machine has no usable CUDA GPU; use trainer.device=cpu or auto")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # set per rank by distributed.setup
    elif device.type != "cpu":
        raise JobError(f"trainer.device={name!r} is not supported; use auto, cpu, cuda or cuda:<index>")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU; exact fp32 on CPU (so CPU runs are bit-reproducible)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
