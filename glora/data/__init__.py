"""Task data for every job: the embedded suite, VTAB-1k folders or ImageFolder trees,
behind one ``build_task(cfg, preprocess)`` door returning train / val / trainval / test."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    DistributedSampler,
    TensorDataset,
)
from torchvision import transforms

from glora.run.errors import DataError
from .embedded import SOURCE_TASK, TARGET_TASKS, TASKS, make_task
from .folders import FileListDataset, imagefolder_split, vtab1k_split

__all__ = ["SOURCE_TASK", "SPLITS", "TARGET_TASKS", "DataConfig", "Preprocess", "TaskData", "build_task"]

SPLITS = ("train", "val", "trainval", "test")


@dataclass
class DataConfig:
    """Where a job's images come from (``source``: embedded | vtab1k | imagefolder)."""

    source: str = "embedded"
    task: str = "count"  # embedded task name (a label only, for folders)
    root: Optional[str] = None  # vtab1k / imagefolder folder
    num_classes: Optional[int] = None  # folders: inferred from the training labels when unset
    seed: int = 0  # embedded data generation
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 0


@dataclass(frozen=True)
class Preprocess:
    """What the model expects: square input size and normalisation."""

    img_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass
class TaskData:
    name: str
    num_classes: int
    splits: dict[str, Dataset]
    cfg: DataConfig

    def loader(self, split: str, train: bool = False, seed: int = 0, rank: int = 0, world: int = 1) -> DataLoader:
        """A loader over ``split``. Training loaders shuffle by a permutation seeded by
        ``seed`` and give rank ``rank`` of ``world`` every world-th sample of each global
        batch of ``data.batch_size`` (the same permutation and global batches at any world
        size; ``world=1`` is the whole batch)."""
        if not train:
            return DataLoader(self.splits[split], batch_size=self.cfg.eval_batch_size, shuffle=False, num_workers=self.cfg.num_workers)
        if self.cfg.batch_size % world:
            raise DataError(
                f"data.batch_size={self.cfg.batch_size} (the global batch) is not divisible by the world size {world}; "
                f"use a multiple of {world} or another --nproc_per_node"
            )
        sampler = DistributedSampler(self.splits[split], num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
        return DataLoader(self.splits[split], batch_size=self.cfg.batch_size // world, sampler=sampler, drop_last=False,
                          num_workers=self.cfg.num_workers)


def _embedded(cfg: DataConfig, pre: Preprocess, sizes: dict[str, int] | None = None) -> tuple[dict[str, Dataset], int]:
    if cfg.task not in TASKS:
        raise DataError(f"data.task={cfg.task!r} is not an embedded task; choose one of {sorted(TASKS)}")
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    splits: dict[str, Dataset] = {}
    for split, (images, labels) in make_task(cfg.task, cfg.seed, sizes).items():
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
        if x.shape[-1] != pre.img_size:
            x = F.interpolate(x, size=(pre.img_size, pre.img_size), mode="bilinear", align_corners=False)
        splits[split] = TensorDataset((x - mean) / std, torch.from_numpy(labels))
    splits["trainval"] = ConcatDataset([splits["train"], splits["val"]])
    return splits, TASKS[cfg.task][1]


def _folders(cfg: DataConfig, pre: Preprocess, sizes: None = None) -> tuple[dict[str, Dataset], int]:
    transform = transforms.Compose(
        [
            transforms.Resize((pre.img_size, pre.img_size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]
    )
    if cfg.source == "vtab1k":
        items = {split: vtab1k_split(cfg.root, split) for split in SPLITS}
    else:
        train, classes = imagefolder_split(cfg.root, "train")
        val, _ = imagefolder_split(cfg.root, "val", classes)
        test, _ = imagefolder_split(cfg.root, "test", classes)
        items = {"train": train, "val": val, "trainval": train + val, "test": test}
    seen = max(label for _, label in items["trainval"]) + 1
    num_classes = cfg.num_classes or seen
    for split, rows in items.items():
        for path, label in rows:
            if not 0 <= label < num_classes:
                raise DataError(
                    f"{split} split: label {label} of {path.name} is out of range 0..{num_classes - 1} "
                    f"({'data.num_classes' if cfg.num_classes else 'classes seen in train+val'}); "
                    "fix the list file or set data.num_classes"
                )
    return {split: FileListDataset(rows, transform) for split, rows in items.items()}, num_classes


_SOURCES = {"embedded": _embedded, "vtab1k": _folders, "imagefolder": _folders}


def build_task(cfg: DataConfig, pre: Preprocess, sizes: dict[str, int] | None = None) -> TaskData:
    """The task's splits, checked up front; ``sizes`` resizes embedded splits (pretraining)."""
    if cfg.source not in _SOURCES:
        raise DataError(f"data.source={cfg.source!r} is unknown; use one of {sorted(_SOURCES)}")
    splits, num_classes = _SOURCES[cfg.source](cfg, pre, sizes)
    return TaskData(cfg.task, num_classes, splits, cfg)
