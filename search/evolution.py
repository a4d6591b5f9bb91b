"""Evolution as in AutoFormer / GLoRA: keep the top-k, then crossover and mutation
children of the top-k, re-sampled until legal."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from glora.run.errors import require

from .operators import LayoutOps
from .strategy import Record, SearchStrategy, register_strategy, top_k


@register_strategy("evolution")
@dataclass
class Evolution(SearchStrategy):
    """Unset counts follow ``population``: top-k = population / 5 (at least 2), children
    half by crossover, half by mutation (50 → top 10, 25 + 25)."""

    top_k: Optional[int] = None
    crossover: Optional[int] = None
    mutation: Optional[int] = None
    mutation_prob: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.top_k is None or 1 <= self.top_k <= self.population, "search.top_k", self.top_k,
                f"keep between 1 and search.population={self.population} parents (null: population / 5)")
        for name in ("crossover", "mutation"):
            value = getattr(self, name)
            require(value is None or value >= 0, f"search.{name}", value, "use 0 or more children per generation (null: half the population)")
        require(sum(self.children) >= 1, "search.crossover", self.crossover, "with search.mutation, propose at least 1 child per generation")
        require(0 <= self.mutation_prob <= 1, "search.mutation_prob", self.mutation_prob, "use a per-layer probability in [0, 1], e.g. 0.2")

    @property
    def parents(self) -> int:
        return self.top_k if self.top_k is not None else max(2, self.population // 5)

    @property
    def children(self) -> tuple[int, int]:
        """(crossover, mutation) children per generation."""
        cross = self.crossover if self.crossover is not None else self.population // 2
        mutate = self.mutation if self.mutation is not None else self.population - self.population // 2
        return cross, mutate

    def size(self, generation: int) -> int:
        return self.population if generation == 0 else sum(self.children)

    def propose(self, generation: int, records: list[Record], ops: LayoutOps, rng: random.Random):
        parents = [r.layers for r in top_k(records, self.parents)]
        cross, mutate = self.children
        children = [ops.crossover(*rng.sample(parents, 2), rng) if len(parents) > 1 else ops.random(rng) for _ in range(cross)]
        children += [ops.mutate(rng.choice(parents), rng, self.mutation_prob) for _ in range(mutate)]
        return children
