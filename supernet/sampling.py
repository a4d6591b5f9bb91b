"""What one supernet training step trains: a list of layouts, each either a random layout
(every layer drawn from the supernet's seeded sampler, the one-shot default) or a fixed one
(a layout near a budget, the largest or the smallest of the space), some of them
teachers whose predictions the others learn from (in-place distillation).

The training loop only asks :func:`use_step_layout` to put one member in place; who plans
the members (uniform draws, a budget band, the sandwich rule) lives above it."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from torch import nn

from glora.spaces import TENSORS, Choice, option_cost

from .wrap import glora_layers, reseed, space_of

__all__ = ["StepLayout", "RANDOM_LAYOUT", "extreme_layers", "release_step_layout", "use_step_layout"]


@dataclass(frozen=True)
class StepLayout:
    """One forward of a training step. ``layers`` is None for a per-layer random draw from
    the supernet's sampler; ``teacher``: its soft predictions become the targets of the
    members after it that set ``distill`` (their loss is cross-entropy to those, not to
    the labels)."""

    layers: Optional[Mapping[str, Choice]] = None
    teacher: bool = False
    distill: bool = False
    role: str = "random"


RANDOM_LAYOUT = StepLayout()


def use_step_layout(model: nn.Module, member: StepLayout, seed: int) -> None:
    """Put ``member`` in place for the next forward: a random member reseeds the sampler
    with ``seed`` (so the draw is a function of run seed and step), a fixed one sets every
    layer's choice (layouts planned by the trainer are legal by construction: no check)."""
    if member.layers is None:
        for layer in glora_layers(model).values():
            layer.choice = None
        reseed(model, seed)
        return
    for name, layer in glora_layers(model).items():
        layer.choice = tuple(member.layers[name])


def release_step_layout(model: nn.Module) -> None:
    """Back to supernet mode after a step that fixed layouts (evaluation draws at random)."""
    for layer in glora_layers(model).values():
        layer.choice = None


def extreme_layers(model: nn.Module, largest: bool) -> dict[str, Choice]:
    """Every layer at its dearest (``largest``) or cheapest option of each support tensor:
    the two ends of the sandwich rule."""
    space_of(model)  # a wrapped model, or one clear error
    out = {}
    for name, layer in glora_layers(model).items():
        row = []
        for tensor, options in zip(TENSORS, layer.choices):
            cost = {o: option_cost(tensor, o, layer.out_features, layer.in_features) for o in options}
            row.append(max(options, key=cost.get) if largest else min(options, key=cost.get))
        out[name] = tuple(row)  # type: ignore[assignment]
    return out
