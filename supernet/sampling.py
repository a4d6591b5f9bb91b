"""What one supernet training step trains: a list of layouts, each either a random layout
(every layer drawn from the supernet's seeded sampler, the one-shot default) or a fixed one
(a layout near a budget, the largest or the smallest of the space), some of them
teachers whose predictions the others learn from (in-place distillation).

:class:`SupernetSteps` is the training loop's step hook for a supernet: it puts each
member in place (:func:`use_step_layout`); who plans the members (uniform draws, a budget
band, the sandwich rule) lives above it."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

from torch import nn

from glora.spaces import TENSORS, Choice, option_cost

from .wrap import glora_layers, reseed, space_of

__all__ = ["EVAL_SEED", "StepLayout", "RANDOM_LAYOUT", "SupernetSteps", "extreme_layers", "release_step_layout", "use_step_layout"]

EVAL_SEED = 12345  # a supernet's validation always sees the same sequence of random subnets


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


class SupernetSteps:
    """The training loop's step hook (``glora.training.StepHook``) for a supernet: each step
    trains the members ``plan(step)`` lists (default: one random layout, drawn from the
    sampler reseeded by the loop's per-step seed, so resumed and multi-process runs draw the
    same layouts); every evaluation draws from ``EVAL_SEED``."""

    def __init__(self, plan: Optional[Callable[[int], Sequence[StepLayout]]] = None) -> None:
        self.plan = plan

    def members(self, step: int) -> Sequence[StepLayout]:
        return self.plan(step) if self.plan is not None else (RANDOM_LAYOUT,)

    def put(self, model: nn.Module, member: StepLayout, seed: int) -> None:
        use_step_layout(model, member, seed)

    def release(self, model: nn.Module) -> None:
        release_step_layout(model)

    def before_eval(self, model: nn.Module) -> None:
        reseed(model, EVAL_SEED)


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
