"""The one small interface every search strategy implements, and the record it reads."""
from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Protocol

from spaces import Choice
from supernet.errors import JobError

from .operators import LayoutOps

__all__ = ["Record", "Strategy", "Generations", "STRATEGIES", "register_strategy", "get_strategy"]


@dataclass
class Record:
    """One evaluated layout."""

    generation: int
    hash: str
    layers: dict[str, Choice]
    params: int
    val_acc: float
    seconds: float


class Strategy(Protocol):
    """Proposes the candidates of one generation from everything evaluated so far."""

    def propose(self, generation: int, records: list[Record], ops: LayoutOps, rng: random.Random) -> list[dict[str, Choice]]: ...


@dataclass
class Generations:
    """What every strategy shares: how many candidates a generation holds, and the
    first population (the user's seed layouts, made legal, then random legal layouts)."""

    population: int = 50
    crossover: int = 25
    mutation: int = 25
    seed_layers: tuple = ()

    def size(self, generation: int) -> int:
        return self.population if generation == 0 else self.crossover + self.mutation

    def initial(self, ops: LayoutOps, rng: random.Random) -> list[dict[str, Choice]]:
        seeds = [ops.repair(s, rng) for s in self.seed_layers]
        return seeds + [ops.random(rng) for _ in range(self.population - len(seeds))]


STRATEGIES: dict[str, type] = {}


def register_strategy(name: str):
    def add(cls: type) -> type:
        STRATEGIES[name] = cls
        return cls

    return add


def get_strategy(name: str, **settings) -> Strategy:
    """The strategy registered as ``name``, given those ``settings`` it has fields for."""
    if name not in STRATEGIES:
        raise JobError(f"search.strategy={name!r} is unknown; strategies are {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    return cls(**{f.name: settings[f.name] for f in fields(cls) if f.name in settings})


def top_k(records: list[Record], k: int) -> list[Record]:
    """Best first; ties broken by fewer params, then generation order (deterministic)."""
    return sorted(records, key=lambda r: (-r.val_acc, r.params))[:k]
