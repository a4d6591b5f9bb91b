"""Shifted test sets, offline (the domain-generalisation protocol): ``data.shift=<name>[:severity]``
corrupts a task's test images in the manner of MNIST-C / ImageNet-C, at severities 1-5,
seeded and deterministic (image i's randomness depends only on the seed, the shift and i),
labels untouched. Shifts work on images in [0, 1] before the model's normalisation."""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset, TensorDataset

from glora.run.errors import ConfigError

__all__ = ["SEVERITIES", "SHIFTS", "Shift", "ShiftedDataset", "parse_shift", "shift_images", "shifted"]

SEVERITIES = range(1, 6)


def _noise(x: torch.Tensor, level: float, gen: torch.Generator) -> torch.Tensor:
    return x + level * torch.randn(x.shape, generator=gen)


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x`` (..., H, W) blurred by a Gaussian of ``sigma`` px, its kernel out to 3 sigma."""
    size = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(x, [size, size], [sigma, sigma])


def _blur(x: torch.Tensor, level: float, gen: None) -> torch.Tensor:
    return _gaussian(x, level * x.shape[-1] / 28)  # sigma in pixels of a 28-px digit, scaled to the image


def _contrast(x: torch.Tensor, level: float, gen: None) -> torch.Tensor:
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)  # each image's own
    return (x - mean) * level + mean


def _rotate(x: torch.Tensor, level: float, gen: torch.Generator) -> torch.Tensor:
    sign = 1.0 if torch.rand((), generator=gen).item() < 0.5 else -1.0
    return TF.rotate(x.unsqueeze(0), sign * level, interpolation=TF.InterpolationMode.BILINEAR, fill=0.0).squeeze(0)


def _invert(x: torch.Tensor, level: float, gen: None) -> torch.Tensor:
    return (1 - level) * x + level * (1 - x)


def _elastic(x: torch.Tensor, level: float, gen: torch.Generator) -> torch.Tensor:
    """A smooth random displacement field (Simard et al.'s elastic distortion): uniform noise
    blurred at 4 px per 28, scaled to ``level`` px per 28 at its largest."""
    size = x.shape[-1]
    field = torch.rand((2, size, size), generator=gen) * 2 - 1
    field = _gaussian(field.unsqueeze(0), 4.0 * size / 28).squeeze(0)
    field = field / field.abs().amax().clamp_min(1e-8) * (level * size / 28) * (2 / size)  # pixels -> grid units
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    grid = torch.stack([xs + field[0], ys + field[1]], dim=-1).unsqueeze(0)
    return F.grid_sample(x.unsqueeze(0), grid, mode="bilinear", padding_mode="zeros", align_corners=True).squeeze(0)


@dataclass(frozen=True)
class ShiftKind:
    apply: Callable[[torch.Tensor, float, torch.Generator | None], torch.Tensor]  # one image (C, H, W) with its generator, or a batch without
    levels: tuple[float, float, float, float, float]  # severity 1..5
    what: str
    random: bool = True  # draws per image; else the same function of every image, applied to a whole batch at once


#: name -> how it corrupts and its level at each severity (rising)
SHIFTS: dict[str, ShiftKind] = {
    "gaussian_noise": ShiftKind(_noise, (0.08, 0.12, 0.18, 0.26, 0.38), "additive Gaussian noise, std"),
    "blur": ShiftKind(_blur, (0.5, 0.75, 1.0, 1.5, 2.0), "Gaussian blur, sigma in px per 28 px", random=False),
    "contrast": ShiftKind(_contrast, (0.6, 0.45, 0.3, 0.2, 0.1), "contrast kept around each image's mean", random=False),
    "rotation": ShiftKind(_rotate, (10.0, 20.0, 30.0, 45.0, 60.0), "rotation by +-degrees (sign drawn per image)"),
    "inversion": ShiftKind(_invert, (0.2, 0.4, 0.6, 0.8, 1.0), "blend towards the negative (1 = fully inverted)", random=False),
    "elastic": ShiftKind(_elastic, (2.0, 3.0, 4.0, 5.5, 7.0), "elastic distortion, largest shift in px per 28 px"),
}


@dataclass(frozen=True)
class Shift:
    name: str
    severity: int

    def __str__(self) -> str:
        return f"{self.name}:{self.severity}"

    @property
    def level(self) -> float:
        return SHIFTS[self.name].levels[self.severity - 1]


def parse_shift(text: str, field: str = "data.shift") -> Shift:
    """``name`` or ``name:severity`` (1-5, default 3); anything else is one ConfigError."""
    name, _, severity = str(text).partition(":")
    if name not in SHIFTS:
        raise ConfigError(f"{field}={text!r} cannot work: the shifts are {', '.join(sorted(SHIFTS))} (optionally :1..5, e.g. blur:3)")
    if severity and (not severity.isdigit() or int(severity) not in SEVERITIES):
        raise ConfigError(f"{field}={text!r} cannot work: a severity is a whole number 1..5, e.g. {name}:3")
    return Shift(name, int(severity) if severity else 3)


def _generator(seed: int, shift: Shift, index: int) -> torch.Generator:
    """A generator per image, the same in every process (Python's str hash is salted per process)."""
    digest = hashlib.sha256(f"{seed}|{shift.name}|{shift.severity}|{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def shift_images(images: torch.Tensor, shift: Shift, seed: int, start: int = 0) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] corrupted by ``shift``; image i uses its own generator."""
    kind = SHIFTS[shift.name]
    if not kind.random:
        return kind.apply(images, shift.level, None).clamp_(0.0, 1.0)
    out = torch.stack([kind.apply(x, shift.level, _generator(seed, shift, start + i)) for i, x in enumerate(images)])
    return out.clamp_(0.0, 1.0)


class ShiftedDataset(Dataset):
    """A normalised dataset's images un-normalised, shifted and normalised again, on access."""

    def __init__(self, data: Dataset, shift: Shift, seed: int, mean: tuple[float, ...], std: tuple[float, ...]):
        self.data, self.shift, self.seed = data, shift, seed
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        x, y = self.data[index]
        raw = x * self.std + self.mean
        return (shift_images(raw.unsqueeze(0), self.shift, self.seed, index)[0] - self.mean) / self.std, y


def shifted(data: Dataset, shift: Shift, seed: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Dataset:
    """``data`` (normalised by mean / std) under ``shift``: in-memory sets at once, files on access."""
    if isinstance(data, TensorDataset):
        images, labels = data.tensors
        m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        return TensorDataset((shift_images(images * s + m, shift, seed) - m) / s, labels)
    return ShiftedDataset(data, shift, seed, mean, std)
