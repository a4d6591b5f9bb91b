"""Random search: ``population`` uniform legal layouts every generation — the baseline
evolution must beat."""
from __future__ import annotations

import random
from dataclasses import dataclass

from .operators import LayoutOps
from .strategy import Record, SearchStrategy, register_strategy


@register_strategy("random")
@dataclass
class RandomSearch(SearchStrategy):
    def propose(self, generation: int, records: list[Record], ops: LayoutOps, rng: random.Random):
        return [ops.random(rng) for _ in range(self.size(generation))]
