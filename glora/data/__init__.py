"""Task data for every job: the embedded suite, VTAB-1k folders or ImageFolder trees,
behind one ``build_task(cfg, preprocess)`` door returning train / val / trainval / test."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
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

from glora.run.errors import DataError, require

from .embedded import SOURCE_TASK, TARGET_TASKS, TASKS, make_task
from .few_shot import few_shot_splits
from .folders import VTAB_SPLIT_FILES, FileListDataset, decode_all, imagefolder_split, vtab1k_split
from .packaged import REAL_TASKS, load_real_task
from .shifts import parse_shift, shifted

__all__ = ["REAL_TASKS", "SOURCE_TASK", "SPLITS", "TARGET_TASKS", "DataConfig", "Preprocess", "TaskData", "build_task", "task_label"]

SPLITS = ("train", "val", "trainval", "test")
#: A task name becomes part of stage folders (train-<task>, ...): no separators, no '..'; '@' and ':' for
#: shifted targets (mnist@blur:3), '-' for k-shot names (mnist-16shot).
_TASK_NAME = re.compile(r"[A-Za-z0-9_.@:-]+")


@dataclass
class DataConfig:
    """Where a job's images come from (``source``: embedded | vtab1k | imagefolder)."""

    source: str = "embedded"
    task: Optional[str] = "count"  # built-in task; for folders a label (null: the folder's name)
    root: Optional[str] = None  # vtab1k / imagefolder folder
    num_classes: Optional[int] = None  # folders: inferred from the training labels when unset
    seed: int = 0  # embedded data generation
    # Built-in tasks: this many more held-out images (split "rank", disjoint from train / val /
    # test) that the search ranks layouts on together with val; 200 val images alone give a
    # standard error of ~3 points, more than most layouts differ by.
    rank_images: int = 0
    # Few-shot (the paper's protocol): train on `shots` images per class drawn from train + val,
    # validate on `val_shots` more per class (null: as many as shots); test stays whole.
    shots: Optional[int] = None
    val_shots: Optional[int] = None
    split_seed: int = 0  # seeds the k-shot draw and the test shift
    # A shifted test set (domain generalisation): <name>[:severity 1-5], e.g. blur:3; the shifts are
    # gaussian_noise, blur, contrast, rotation, inversion, elastic (glora/data/shifts.py). Train and val stay clean.
    shift: Optional[str] = None
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 0

    def __post_init__(self) -> None:
        require(self.source in _SOURCES, "data.source", self.source, f"use one of {sorted(_SOURCES)} (data=<source>)")
        require(self.task is None or (isinstance(self.task, str) and bool(_TASK_NAME.fullmatch(self.task)) and ".." not in self.task
                                      and self.task != "."), "data.task", self.task,
                "use a name of letters, digits and _ . @ : - (no path separators or '..'), e.g. mnist, or null for a folder's name")
        require(self.batch_size >= 1, "data.batch_size", self.batch_size, "use at least 1 image per batch, e.g. 64")
        require(self.eval_batch_size >= 1, "data.eval_batch_size", self.eval_batch_size, "use at least 1 image per batch, e.g. 256")
        require(self.num_workers >= 0, "data.num_workers", self.num_workers, "use 0 (load in the main process) or more workers")
        require(self.num_classes is None or self.num_classes >= 2, "data.num_classes", self.num_classes,
                "a classifier needs at least 2 classes; leave it null to count them from the labels")
        require(self.seed >= 0, "data.seed", self.seed, "use a seed >= 0")
        require(self.rank_images >= 0, "data.rank_images", self.rank_images, "use 0 (rank on val alone) or a number of extra held-out images")
        require(self.rank_images == 0 or self.source == "embedded", "data.rank_images", self.rank_images,
                "extra ranking images exist only for built-in tasks (data.source=embedded); use 0 for folders")
        require(self.shots is None or self.shots >= 1, "data.shots", self.shots, "use null (the whole task) or at least 1 image per class")
        require(self.val_shots is None or self.val_shots >= 1, "data.val_shots", self.val_shots,
                "use null (as many as data.shots) or at least 1 image per class")
        require(self.val_shots is None or self.shots is not None, "data.val_shots", self.val_shots, "set data.shots too, or leave val_shots null")
        require(self.shots is None or self.rank_images == 0, "data.rank_images", self.rank_images,
                "a k-shot task sees only its k-shot labels: use data.rank_images=0 with data.shots")
        require(self.split_seed >= 0, "data.split_seed", self.split_seed, "use a seed >= 0")
        if self.shift is not None:
            parse_shift(self.shift)


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

    def ranking_loader(self) -> DataLoader:
        """What the search ranks layouts on: val, plus the held-out "rank" images if any
        (``data.rank_images``)."""
        data = ConcatDataset([self.splits["val"], self.splits["rank"]]) if "rank" in self.splits else self.splits["val"]
        return self._eval_loader(data)

    def _eval_loader(self, data: Dataset) -> DataLoader:
        return DataLoader(data, batch_size=self.cfg.eval_batch_size, shuffle=False, num_workers=self.cfg.num_workers)

    def loader(self, split: str, train: bool = False, seed: int = 0, rank: int = 0, world: int = 1) -> DataLoader:
        """A loader over ``split``. Training loaders shuffle by a permutation seeded by
        ``seed`` and give rank ``rank`` of ``world`` every world-th sample of each global
        batch of ``data.batch_size`` (the same permutation and global batches at any world
        size; ``world=1`` is the whole batch)."""
        if not train:
            return self._eval_loader(self.splits[split])
        if self.cfg.batch_size % world:
            raise DataError(
                f"data.batch_size={self.cfg.batch_size} (the global batch) is not divisible by the world size {world}; "
                f"use a multiple of {world} or another --nproc_per_node"
            )
        sampler = DistributedSampler(self.splits[split], num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
        return DataLoader(self.splits[split], batch_size=self.cfg.batch_size // world, sampler=sampler, drop_last=False,
                          num_workers=self.cfg.num_workers)


@functools.lru_cache(maxsize=8)
def _rendered(task: str, seed: int, sizes: tuple[tuple[str, int], ...] | None, rank_images: int):
    """An embedded task's arrays, rendered once per process: rendering takes seconds, and one
    pipeline builds its task for every stage (callers get copies). Real tasks are read anew:
    their files are the installed packages'."""
    return make_task(task, seed, dict(sizes) if sizes else None, rank_images)


def _embedded(cfg: DataConfig, pre: Preprocess, sizes: dict[str, int] | None = None) -> tuple[dict[str, Dataset], int]:
    if cfg.task in REAL_TASKS:
        arrays, classes = load_real_task(cfg.task, cfg.seed, pre.img_size, cfg.rank_images), REAL_TASKS[cfg.task].classes
    elif cfg.task in TASKS:
        try:
            cached = _rendered(cfg.task, cfg.seed, tuple(sorted(sizes.items())) if sizes else None, cfg.rank_images)
            arrays, classes = {split: (images.copy(), labels.copy()) for split, (images, labels) in cached.items()}, TASKS[cfg.task][1]
        except ValueError as err:
            raise DataError(str(err)) from None
    else:
        raise DataError(f"data.task={cfg.task!r} is not a built-in task; choose one of {sorted(TASKS)} (embedded) "
                        f"or {sorted(REAL_TASKS)} (real images from installed packages)")
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    splits: dict[str, Dataset] = {}
    for split, (images, labels) in arrays.items():
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
        if x.shape[-1] != pre.img_size:
            x = F.interpolate(x, size=(pre.img_size, pre.img_size), mode="bilinear", align_corners=False)
        splits[split] = TensorDataset((x - mean) / std, torch.from_numpy(labels))
    splits["trainval"] = ConcatDataset([splits["train"], splits["val"]])
    return splits, classes



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
    labels = {label for _, label in items["trainval"]}
    seen = max(labels) + 1
    missing = sorted(set(range(seen)) - labels)
    if cfg.source == "vtab1k" and missing and not cfg.num_classes:  # a gap would silently widen the head
        gaps = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise DataError(f"{Path(cfg.root).expanduser() / VTAB_SPLIT_FILES['trainval']}: labels 0..{seen - 1} miss {gaps}; "
                        f"renumber the labels 0..K-1, or set data.num_classes={seen} if those classes exist without training images")
    num_classes = cfg.num_classes or seen
    for split, rows in items.items():
        for path, label in rows:
            if not 0 <= label < num_classes:
                raise DataError(
                    f"{split} split: label {label} of {path.name} is out of range 0..{num_classes - 1} "
                    f"({'data.num_classes' if cfg.num_classes else 'classes seen in train+val'}); "
                    "fix the list file or set data.num_classes"
                )
    if num_classes < 2:
        raise DataError(f"data.root {cfg.root!r} has a single class in its training labels: a classifier needs at least 2; "
                        "point data.root at a task with several classes")
    decode_all(sorted({path for rows in items.values() for path, _ in rows}))
    return {split: FileListDataset(rows, transform) for split, rows in items.items()}, num_classes


_SOURCES = {"embedded": _embedded, "vtab1k": _folders, "imagefolder": _folders}


def build_task(cfg: DataConfig, pre: Preprocess, sizes: dict[str, int] | None = None) -> TaskData:
    """The task's splits, checked up front; ``sizes`` resizes embedded splits (pretraining)."""
    splits, num_classes = _SOURCES[cfg.source](cfg, pre, sizes)
    if cfg.shots is not None:
        names = sorted(p.name for p in (Path(cfg.root).expanduser() / "train").iterdir() if p.is_dir()) if cfg.source == "imagefolder" else None
        splits = few_shot_splits(splits, num_classes, cfg.shots, cfg.val_shots or cfg.shots, cfg.split_seed,
                                 f"task {_source_label(cfg)!r}", names)
    if cfg.shift is not None:
        splits = {**splits, "test": shifted(splits["test"], parse_shift(cfg.shift), cfg.split_seed, pre.mean, pre.std)}
    return TaskData(task_label(cfg), num_classes, splits, cfg)


def task_label(cfg: DataConfig) -> str:
    """The task's name in tables and run names: ``data.task``, or a folder's own name."""
    name = _source_label(cfg) + ("" if cfg.shots is None else f"-{cfg.shots}shot")
    if cfg.shift is None:
        return name
    shift = parse_shift(cfg.shift)
    return f"{name}-{shift.name}{shift.severity}"


def _source_label(cfg: DataConfig) -> str:
    return cfg.task or (Path(cfg.root).expanduser().resolve().name if cfg.root else cfg.source)
