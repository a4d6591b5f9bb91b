"""Evolution as in AutoFormer / GLoRA: random legal population, keep the top-k, then
crossover and mutation children of the top-k, re-sampled until legal."""
from __future__ import annotations

import random
from dataclasses import dataclass

from .operators import LayoutOps
from .strategy import Generations, Record, register_strategy, top_k


@register_strategy("evolution")
@dataclass
class Evolution(Generations):
    top_k: int = 10
    mutation_prob: float = 0.2

    def propose(self, generation: int, records: list[Record], ops: LayoutOps, rng: random.Random):
        if generation == 0:
            return self.initial(ops, rng)
        parents = [r.layers for r in top_k(records, self.top_k)]
        children = [ops.crossover(*rng.sample(parents, 2), rng) if len(parents) > 1 else ops.random(rng) for _ in range(self.crossover)]
        children += [ops.mutate(rng.choice(parents), rng, self.mutation_prob) for _ in range(self.mutation)]
        return children
