"""k-shot splits (the GLoRA paper's few-shot protocol): ``data.shots=k`` keeps k labelled
images per class of a task's labelled pool (train + val) for training and
``data.val_shots`` per class of the rest for validation; test is left whole. The draw is
seeded by ``data.split_seed`` and works the same on every source, since it needs only the
labels of the splits already built."""
from __future__ import annotations

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from glora.run.errors import DataError

from .folders import FileListDataset

__all__ = ["draw_shots", "few_shot_splits", "labels_of"]


def labels_of(data: Dataset) -> np.ndarray:
    """Every label of ``data`` in order, without decoding an image."""
    if isinstance(data, TensorDataset):
        return data.tensors[1].numpy()
    if isinstance(data, FileListDataset):
        return np.array([label for _, label in data.items], dtype=np.int64)
    if isinstance(data, ConcatDataset):
        return np.concatenate([labels_of(part) for part in data.datasets])
    if isinstance(data, Subset):
        return labels_of(data.dataset)[np.asarray(data.indices, dtype=np.int64)]
    raise TypeError(f"cannot read the labels of a {type(data).__name__}")


def draw_shots(labels: np.ndarray, num_classes: int, shots: int, val_shots: int, seed: int, where: str,
               class_names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``labels``: ``shots`` per class for train, ``val_shots`` more per class for
    val, disjoint, the same for the same seed. A class with too few images is one DataError
    naming it and its count."""
    rng = np.random.default_rng([seed, 1013])
    train, val = [], []
    need = shots + val_shots
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < need:
            name = f"class {c}" + (f" ({class_names[c]!r})" if class_names and c < len(class_names) else "")
            raise DataError(f"data.shots={shots} + data.val_shots={val_shots} needs {need} labelled images per class, but {name} of "
                            f"{where} has {len(idx)} in train + val; lower data.shots / data.val_shots")
        picked = rng.permutation(idx)
        train.append(picked[:shots])
        val.append(picked[shots:need])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def few_shot_splits(splits: dict[str, Dataset], num_classes: int, shots: int, val_shots: int, seed: int, where: str,
                    class_names: list[str] | None = None) -> dict[str, Dataset]:
    """``splits`` with train / val / trainval cut to the k-shot draw from train + val; test as it is."""
    pool = ConcatDataset([splits["train"], splits["val"]])
    train, val = draw_shots(labels_of(pool), num_classes, shots, val_shots, seed, where, class_names)
    return {**splits, "train": Subset(pool, train.tolist()), "val": Subset(pool, val.tolist()),
            "trainval": Subset(pool, np.sort(np.concatenate([train, val])).tolist())}
