"""Real-data loaders: VTAB-1k task folders and ImageFolder trees.

Both check the whole split up front (missing files, labels out of range) so that a bad
folder fails at start with one message, not halfway through an epoch. Images are
converted to RGB and resized to the model's input, as real folders hold greyscale and
odd-sized images.
"""
from __future__ import annotations

import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
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


#: File kinds that are not images, as named in the error (a FIFO would block open() forever).
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFDIR: "a folder", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}
#: PIL's high-bit-depth greyscale modes: convert("RGB") clips them at 255, so they are scaled first.
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _decode(path: Path) -> Image.Image:
    try:
        kind = stat.S_IFMT(path.stat().st_mode)  # before open(): opening a FIFO blocks until a writer comes
        if kind != stat.S_IFREG:
            raise DataError(f"{path} is {_KINDS.get(kind, 'not a regular file')}, not an image file; remove it "
                            "(and its line in the split's list)")
        with Image.open(path) as img:
            if img.mode in _WIDE_MODES:  # 16-bit PNG / TIFF: 0..65535 -> 0..255 (65535 / 257 = 255)
                grey = np.asarray(img).astype(np.float32) / 257
                return Image.fromarray(grey.round().clip(0, 255).astype(np.uint8), "L").convert("RGB")
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
    """Items of one split of a VTAB-1k task folder (``<path> <label>`` lines, UTF-8, paths
    relative to the folder and inside it, labels in ASCII digits)."""
    folder = _check_root(root, "a VTAB-1k task folder (train800.txt, val200.txt, train800val200.txt, test.txt)")
    list_file = folder / VTAB_SPLIT_FILES[split]
    if not list_file.is_file():
        raise DataError(f"VTAB-1k folder {str(folder)!r} has no {list_file.name} (needed for the {split!r} split)")
    try:
        text = list_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{list_file} is not UTF-8 (byte {err.start}); save it as UTF-8") from None
    inside = os.path.normpath(folder.absolute())
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9]+", parts[1]):  # not isdigit(): it takes '²' and '--1' lstripped
            raise DataError(f"{list_file}:{number}: expected '<image path> <integer label>', got {line!r}; "
                            "write the label as a class index 0..K-1 in ASCII digits")
        # Lexically, not resolve(): '..' and absolute paths leave the folder; a symlink inside it is the user's choice.
        path = folder / parts[0]
        if os.path.commonpath([inside, os.path.normpath(folder.absolute() / parts[0])]) != inside:
            raise DataError(f"{list_file}:{number}: image {parts[0]!r} is outside data.root {folder}; "
                            "list paths relative to the task folder, inside it")
        if not path.exists():
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
            raise DataError(f"{split_dir}/{name}: class {name!r} has no training images (not among the train split's classes "
                            f"{classes}); add them to {folder}/train/{name}/, or remove {split_dir}/{name}")
        images = [path for path in sorted((split_dir / name).iterdir()) if path.suffix.lower() in IMAGE_EXTENSIONS]
        if not images and split == "train":  # an empty class would still get a logit, never trained
            raise DataError(f"{split_dir}/{name}: class {name!r} has no training images; add them to {split_dir}/{name}/, "
                            "or remove that class folder from every split")
        items.extend((path, index[name]) for path in images)
    if not items:
        raise DataError(f"{split_dir} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return items, classes
