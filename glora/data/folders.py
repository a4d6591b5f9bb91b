"""Real-data loaders: VTAB-1k task folders and ImageFolder trees.

Both check the whole split up front (missing files, labels out of range) so that a bad
folder fails at start with one message, not halfway through an epoch. Images are
converted to RGB and resized to the model's input, as real folders hold greyscale and
odd-sized images.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torch.utils.data import Dataset

from glora.run.errors import DataError

__all__ = ["VTAB_SPLIT_FILES", "FileListDataset", "decode_all", "vtab1k_split", "imagefolder_split", "IMAGE_EXTENSIONS"]

#: Our split names -> the VTAB-1k list files.
VTAB_SPLIT_FILES = {"train": "train800.txt", "val": "val200.txt", "trainval": "train800val200.txt", "test": "test.txt"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class FileListDataset(Dataset):
    """(path, label) pairs read lazily through PIL, converted to RGB."""

    def __init__(self, items: list[tuple[Path, int]], transform: Callable[[Image.Image], torch.Tensor]):
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        return self.transform(_decode(path)), label


def _decode(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # decodes every pixel
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot decode image {path} ({err}); replace or remove it (and its line in the split's list)") from None


def decode_all(paths: list[Path]) -> None:
    """Decode every image once before training starts (in threads: PIL releases the GIL
    while decoding), so a corrupt file is one clear error now, not a worker's trace
    mid-epoch or after a whole retraining."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for _ in pool.map(lambda path: _decode(path).close(), paths):  # raises the first failure, in order
            pass


def _check_root(root: str | None, what: str) -> Path:
    if not root:
        raise DataError(f"data.root is not set; point it at {what}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data.root {str(path)!r} does not exist or is not a folder; point it at {what}")
    if not any(path.iterdir()):
        raise DataError(f"data.root {str(path)!r} is empty; point it at {what}")
    return path


def vtab1k_split(root: str | None, split: str) -> list[tuple[Path, int]]:
    """Items of one split of a VTAB-1k task folder (``<path> <label>`` lines)."""
    folder = _check_root(root, "a VTAB-1k task folder (train800.txt, val200.txt, train800val200.txt, test.txt)")
    list_file = folder / VTAB_SPLIT_FILES[split]
    if not list_file.is_file():
        raise DataError(f"VTAB-1k folder {str(folder)!r} has no {list_file.name} (needed for the {split!r} split)")
    items = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{list_file}:{number}: expected '<image path> <integer label>', got {line!r}")
        path = folder / parts[0]
        if not path.is_file():
            raise DataError(f"{list_file}:{number}: image {parts[0]!r} does not exist under {folder}")
        items.append((path, int(parts[1])))
    if not items:
        raise DataError(f"{list_file} lists no images")
    return items


def imagefolder_split(root: str | None, split: str, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """Items of ``root/<split>/<class>/<image>``; class indices follow sorted folder names
    of the ``train`` split (pass ``classes`` to label the other splits consistently)."""
    folder = _check_root(root, "an ImageFolder tree (root/train/<class>/*.jpg, root/val/..., root/test/...)")
    split_dir = folder / split
    if not split_dir.is_dir():
        raise DataError(f"ImageFolder {str(folder)!r} has no {split!r} folder; expected {folder}/{split}/<class>/<image>")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    classes = classes if classes is not None else found
    index = {name: i for i, name in enumerate(classes)}
    items = []
    for name in found:
        if name not in index:
            raise DataError(f"{split_dir}/{name}: class {name!r} is not among the train split's classes {classes}")
        for path in sorted((split_dir / name).iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                items.append((path, index[name]))
    if not items:
        raise DataError(f"{split_dir} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return items, classes
