"""The embedded default data: offline, deterministic by seed, VTAB-1k shaped.

Target suite (800 train / 200 val / held-out test per task), VTAB's groups in miniature:
``digits`` (scikit-learn's real 8×8 handwritten digits, coloured; natural), ``texture`` (a DTD-like
pattern class, specialised), and ``count`` / ``location`` / ``orientation`` (CLEVR-count
and dSprites-like structured tasks). The pretraining source task, ``shapes``, is distinct:
ten shape classes at random position, size and colour on cluttered backgrounds.

Images are uint8 (N, 32, 32, 3) arrays; every generator is a pure function of its seed.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["SIZE", "TARGET_TASKS", "SOURCE_TASK", "make_task", "split_sizes", "TASKS"]

SIZE = 32
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def _background(rng: np.random.Generator, clutter: float = 1.0) -> np.ndarray:
    """A smooth random colour field plus a little pixel noise."""
    corners = rng.uniform(0, 0.5, size=(2, 2, 3)).astype(np.float32)
    ty, tx = _YY[..., None] / (SIZE - 1), _XX[..., None] / (SIZE - 1)
    top = corners[0, 0] * (1 - tx) + corners[0, 1] * tx
    bottom = corners[1, 0] * (1 - tx) + corners[1, 1] * tx
    img = top * (1 - ty) + bottom * ty
    return img + clutter * rng.normal(0, 0.04, size=img.shape).astype(np.float32)


def _colour(rng: np.random.Generator) -> np.ndarray:
    c = rng.uniform(0.2, 1.0, size=3).astype(np.float32)
    c[rng.integers(3)] = 1.0  # always bright enough to stand out
    return c


def _shape_mask(kind: int, cx: float, cy: float, r: float, angle: float = 0.0) -> np.ndarray:
    dx, dy = _XX - cx, _YY - cy
    if angle:
        dx, dy = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
    ax, ay, t = np.abs(dx), np.abs(dy), max(r / 3.0, 0.9)
    masks = (
        lambda: dx**2 + dy**2 <= r**2,  # disc
        lambda: np.maximum(ax, ay) <= r * 0.85,  # square
        lambda: ax + ay <= r * 1.1,  # diamond
        lambda: (dx**2 + dy**2 <= r**2) & (dx**2 + dy**2 >= (0.55 * r) ** 2),  # ring
        lambda: (dy <= r * 0.8) & (ax <= (dy + r) * 0.55),  # triangle
        lambda: ((ax <= t) & (ay <= r)) | ((ay <= t) & (ax <= r)),  # plus
        lambda: (np.abs(ax - ay) <= t) & (np.maximum(ax, ay) <= r * 0.9),  # x
        lambda: (ay <= t) & (ax <= r),  # horizontal bar
        lambda: (ax <= t) & (ay <= r),  # vertical bar
        lambda: (np.maximum(ax, ay) <= r * 0.9) & (np.maximum(ax, ay) >= r * 0.5),  # hollow square
    )
    return masks[kind]()


def _paint(img: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    img[mask] = colour


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _render(rng: np.random.Generator, n: int, classes: int, draw) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labels, then one image per label from ``draw(rng, label) -> float HWC``."""
    labels = rng.integers(0, classes, size=n)
    images = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        images[i] = _to_uint8(draw(rng, int(label)))
    return images, labels


# ---- source task -------------------------------------------------------------------
def _shapes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    def draw(rng: np.random.Generator, label: int) -> np.ndarray:
        img = _background(rng)
        for _ in range(rng.integers(0, 3)):  # small distractor specks
            _paint(img, _shape_mask(0, *rng.uniform(2, 30, 2), rng.uniform(1, 2)), _colour(rng) * 0.6)
        r = rng.uniform(5, 11)
        cx, cy = rng.uniform(r, SIZE - r, 2)
        _paint(img, _shape_mask(label, cx, cy, r), _colour(rng))
        return img

    return _render(rng, n, 10, draw)


# ---- target tasks ------------------------------------------------------------------
def _count(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """1–6 objects (classes 0–5), non-overlapping, mixed shapes and colours."""

    def draw(rng: np.random.Generator, label: int) -> np.ndarray:
        img = _background(rng, clutter=0.5)
        centres: list[tuple[float, float]] = []
        while len(centres) < label + 1:
            c = tuple(rng.uniform(4, SIZE - 4, 2))
            if all((c[0] - a) ** 2 + (c[1] - b) ** 2 > 49 for a, b in centres):
                centres.append(c)
        for cx, cy in centres:
            _paint(img, _shape_mask(int(rng.choice([0, 1, 2])), cx, cy, rng.uniform(2.2, 3.2)), _colour(rng))
        return img

    return _render(rng, n, 6, draw)


def _location(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Which cell of a 3×3 grid holds the object's centre (9 classes)."""
    cell = SIZE / 3

    def draw(rng: np.random.Generator, label: int) -> np.ndarray:
        img = _background(rng, clutter=0.5)
        row, col = divmod(label, 3)
        cx, cy = rng.uniform(col * cell + 1, (col + 1) * cell - 1), rng.uniform(row * cell + 1, (row + 1) * cell - 1)
        _paint(img, _shape_mask(int(rng.integers(0, 10)), cx, cy, rng.uniform(2.5, 4)), _colour(rng))
        return img

    return _render(rng, n, 9, draw)


def _orientation(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Angle of a bar in eight bins over [0, π) (8 classes)."""

    def draw(rng: np.random.Generator, label: int) -> np.ndarray:
        img = _background(rng, clutter=0.5)
        angle = (label + rng.uniform(0.1, 0.9)) * np.pi / 8
        cx, cy = rng.uniform(10, 22, 2)
        _paint(img, _shape_mask(7, cx, cy, rng.uniform(7, 10), angle), _colour(rng))
        return img

    return _render(rng, n, 8, draw)


def _texture(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Six pattern families at random scale, phase and colours (6 classes)."""

    def draw(rng: np.random.Generator, label: int) -> np.ndarray:
        period = rng.uniform(3.5, 8)
        phase = rng.uniform(0, 2 * np.pi)
        u = 2 * np.pi / period
        pattern = (
            np.sin(_YY * u + phase),  # horizontal stripes
            np.sin(_XX * u + phase),  # vertical stripes
            np.sin((_XX + _YY) * u / np.sqrt(2) + phase),  # diagonal stripes
            np.sin(_XX * u + phase) * np.sin(_YY * u + phase),  # checkerboard
            np.cos(_XX * u + phase) + np.cos(_YY * u + phase) - 1.2,  # dots
            rng.normal(size=(SIZE, SIZE)),  # noise
        )[label]
        fg, bg = _colour(rng), _colour(rng) * 0.4
        t = (pattern > 0).astype(np.float32)[..., None]
        return fg * t + bg * (1 - t) + rng.normal(0, 0.05, size=(SIZE, SIZE, 3))

    return _render(rng, n, 6, draw)


def _digits(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real handwritten digits (8×8, 16 grey levels), upscaled and
    inked in a random colour over a random background (SVHN-like, not white on black)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = rng.permutation(len(digits.target))[:n]
    ink = digits.images[order].astype(np.float32) / 16.0
    ink = ink.repeat(SIZE // 8, axis=1).repeat(SIZE // 8, axis=2)[..., None]
    images = np.empty((len(order), SIZE, SIZE, 3), np.uint8)
    for i in range(len(order)):
        images[i] = _to_uint8(_background(rng) * (1 - ink[i]) + _colour(rng) * ink[i])
    return images, digits.target[order].astype(np.int64)


Generator = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]

#: name -> (generator, number of classes)
TASKS: dict[str, tuple[Generator, int]] = {
    "shapes": (_shapes, 10),
    "digits": (_digits, 10),
    "count": (_count, 6),
    "location": (_location, 9),
    "orientation": (_orientation, 8),
    "texture": (_texture, 6),
}
SOURCE_TASK = "shapes"
TARGET_TASKS = ("digits", "count", "location", "orientation", "texture")


def split_sizes(task: str) -> dict[str, int]:
    """VTAB-1k: 800 train, 200 val; the test split is what remains (digits) or 1,000."""
    test = 1797 - 1000 if task == "digits" else 1000
    if task == SOURCE_TASK:
        return {"train": 20000, "val": 1000, "test": 1000}
    return {"train": 800, "val": 200, "test": test}


def make_task(
    task: str, seed: int = 0, sizes: dict[str, int] | None = None, rank_images: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All splits of one embedded task: ``{"train"|"val"|"test": (images uint8 NHWC, labels)}``,
    plus ``rank_images`` held-out images as split "rank" (drawn from a stream of their own,
    so the other splits do not change; digits, a fixed set, gives the end of its test split)."""
    if task not in TASKS:
        raise KeyError(f"unknown embedded task {task!r}; tasks are {sorted(TASKS)}")
    generate, _ = TASKS[task]
    sizes = sizes or split_sizes(task)
    if rank_images and task == "digits":
        if sizes["test"] - rank_images < 200:
            raise ValueError(f"data.rank_images={rank_images} leaves fewer than 200 digits test images; use at most {sizes['test'] - 200}")
        return make_task(task, seed, {**sizes, "test": sizes["test"] - rank_images, "rank": rank_images})
    if rank_images:
        images, labels = generate(np.random.default_rng([seed, sorted(TASKS).index(task), 1]), rank_images)
        return {**make_task(task, seed, sizes), "rank": (images, labels.astype(np.int64))}
    rng = np.random.default_rng([seed, sorted(TASKS).index(task)])
    images, labels = generate(rng, sum(sizes.values()))
    out, start = {}, 0
    for split, size in sizes.items():
        out[split] = (images[start : start + size], labels[start : start + size].astype(np.int64))
        start += size
    return out
