"""Data-parallel runs under torchrun, through ``torch.distributed``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; a job started without them is one process and
every helper here is a no-op, so the same command and config run either way:

    torchrun --nproc_per_node 2 --no-python glora-train experiment=smoke

What the jobs rely on:
* every rank draws the same layout at a given step (the choice generator is seeded by run
  seed and step) and holds the same data order (a ``DistributedSampler`` seeded per epoch),
  rank r taking every world-th sample of each global batch;
* gradients are averaged over ranks by one all-reduce per step (``average_gradients``), not
  by ``DistributedDataParallel``: a supernet step leaves different parameters unused from
  step to step, and DDP's unused-parameter handling hands the optimiser zero gradients where
  one process would have none (AdamW would still move those parameters). With the same
  layout on every rank, the parameters that have a gradient are the same everywhere;
* rank 0 alone writes files, logs at INFO and shows progress bars; every rank reads
  checkpoints.
"""
from __future__ import annotations

import datetime
import functools
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "STAMP_ENV",
    "all_reduce_sum",
    "average_gradients",
    "barrier",
    "entry_point",
    "gather_lists",
    "is_main",
    "rank",
    "setup",
    "split_over_ranks",
    "world_size",
]

STAMP_ENV = "GLORA_RUN_STAMP"  # rank 0's start time, so every rank resolves the same run dir
TIMEOUT_ENV = "GLORA_DIST_TIMEOUT_S"  # process-group timeout (default 300 s)

T = TypeVar("T")


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def setup() -> None:
    """Join the process group torchrun describes (nccl with CUDA, else gloo), agree on rank
    0's start time (the run dir's name), and keep ranks other than 0 from writing Hydra's
    files. Nothing happens without torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "300")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    stamp = [_stamp()]
    dist.broadcast_object_list(stamp, src=0)
    os.environ[STAMP_ENV] = stamp[0]
    if not is_main():  # rank 0 owns the run dir: its .hydra/ config and the job log
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=stdout", "hydra/hydra_logging=disabled"]


@functools.lru_cache(maxsize=1)
def _stamp() -> str:
    """This process's start time and a short random tag, fixed once per process."""
    return f"{time.time()!r}:{secrets.token_hex(3)}"


def run_stamp(fmt: str) -> str:
    """``${run_stamp:%Y-%m-%d_%H-%M-%S}``: the start time (rank 0's under torchrun) and a
    short random tag, so two jobs started in the same second never share a run dir."""
    moment, tag = os.environ.get(STAMP_ENV, _stamp()).split(":")
    return f"{datetime.datetime.fromtimestamp(float(moment)).strftime(fmt)}_{tag}"


def entry_point(hydra_main: Callable[[], T]) -> Callable[[], T]:
    """A console script's main: join torchrun's process group (if any) before Hydra starts,
    leave it when the job ends."""

    @functools.wraps(hydra_main)
    def main() -> T:
        setup()
        try:
            return hydra_main()
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()

    return main


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def average_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Replace every gradient by its mean over ranks, in one all-reduce. Parameters without a
    gradient this step (unused by the step's layout) have none on any rank."""
    world = world_size()
    if world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_sum(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise sum over ranks of a few numbers (epoch loss sums, counts); ``device`` is
    the ranks' device (nccl reduces CUDA tensors only)."""
    if world_size() == 1:
        return list(values)
    buffer = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(buffer)
    return buffer.tolist()


def gather_lists(items: list[Any]) -> list[list[Any]]:
    """Every rank's ``items``, indexed by rank (picklable objects; small)."""
    if world_size() == 1:
        return [items]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, items)
    return out


def split_over_ranks(score: Callable[[list[Any]], list[Any]]) -> Callable[[list[Any]], list[Any]]:
    """``score`` with its items split over the ranks: rank r scores items r, r + N, ... and
    the results are gathered, so every rank ends with the same list, in the items' order,
    whatever the number of processes."""

    def split(items: list[Any]) -> list[Any]:
        r, world = rank(), world_size()
        gathered = gather_lists(score(items[r::world]))
        return [gathered[i % world][i // world] for i in range(len(items))]

    return split


def quiet_other_ranks() -> None:
    """Ranks other than 0 log warnings and errors only."""
    if not is_main():
        logging.getLogger().setLevel(logging.WARNING)
