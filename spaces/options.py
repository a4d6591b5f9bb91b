"""Options: the forms one support tensor (A–E) can take, parsed once at the boundary.

In code an option is a small frozen value (`kind` plus `rank`); the JSON's strings
(``"LoRA_8"``, ``"vector"``, ``"constant"``, ``"none"``) are parsed by :func:`parse_option`
and never looked at again in a forward pass.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["Option", "parse_option", "TENSORS", "TENSOR_KINDS", "option_cost", "OptionError"]

Kind = Literal["lora", "vector", "constant", "none"]

#: The five support tensors, in the paper's order.
TENSORS: tuple[str, ...] = ("A", "B", "C", "D", "E")

#: Which kinds each support tensor may take at all (DESIGN §1).
TENSOR_KINDS: dict[str, tuple[Kind, ...]] = {
    "A": ("lora", "vector", "constant", "none"),
    "B": ("lora", "vector", "constant", "none"),
    "C": ("lora", "vector", "none"),
    "D": ("vector", "constant", "none"),
    "E": ("vector", "constant", "none"),
}

_LORA = re.compile(r"LoRA_(\d+)")


class OptionError(ValueError):
    """An option string that is not one of the GLoRA forms."""


@dataclass(frozen=True, order=True)
class Option:
    """One form of one support tensor: ``kind`` and, for ``lora``, its ``rank``."""

    kind: Kind
    rank: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("lora", "vector", "constant", "none"):
            raise OptionError(f"unknown option kind {self.kind!r}")
        if (self.kind == "lora") != (self.rank > 0):
            raise OptionError(f"option {self.kind!r} cannot have rank {self.rank}")

    def __str__(self) -> str:
        return f"LoRA_{self.rank}" if self.kind == "lora" else self.kind


def parse_option(text: str) -> Option:
    """Parse the JSON spelling of an option (``"LoRA_8"``, ``"vector"``, ...)."""
    if not isinstance(text, str):
        raise OptionError(f"option must be a string like 'LoRA_8' or 'vector', got {text!r}")
    match = _LORA.fullmatch(text)
    if match:
        rank = int(match.group(1))
        if rank < 1:
            raise OptionError(f"option {text!r}: a LoRA rank must be at least 1")
        return Option("lora", rank)
    if text in ("vector", "constant", "none"):
        return Option(text)  # type: ignore[arg-type]
    raise OptionError(f"unknown option {text!r}; options are 'LoRA_<rank>', 'vector', 'constant', 'none'")


def option_cost(tensor: str, option: Option, out_features: int, in_features: int) -> int:
    """Trainable elements that ``option`` of support tensor ``tensor`` adds (DESIGN §1)."""
    if option.kind == "none":
        return 0
    if option.kind == "constant":
        return 1
    if tensor in ("A", "B"):
        return option.rank * (out_features + in_features) if option.kind == "lora" else out_features
    if tensor == "C":
        return option.rank * (in_features + 1) if option.kind == "lora" else in_features
    return out_features  # D, E vector
