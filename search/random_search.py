"""Random search: the same number of candidates per generation as evolution, all drawn
uniformly (then made legal) — the baseline evolution must beat."""
from __future__ import annotations

import random
from dataclasses import dataclass

from .operators import LayoutOps
from .strategy import Generations, Record, register_strategy


@register_strategy("random")
@dataclass
class RandomSearch(Generations):
    def propose(self, generation: int, records: list[Record], ops: LayoutOps, rng: random.Random):
        if generation == 0:
            return self.initial(ops, rng)
        return [ops.random(rng) for _ in range(self.size(generation))]
