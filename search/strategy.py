"""What every search strategy shares: its settings (one dataclass per strategy, so a
setting a strategy does not have is refused), the one small interface it implements, the
record of one evaluated layout, and the registry the jobs pick strategies from."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from glora.run.errors import JobError, param_count, require
from glora.spaces import Choice

from .operators import LayoutOps

__all__ = ["Record", "SearchConfig", "SearchStrategy", "STRATEGIES", "register_strategy", "get_strategy", "strategy_name", "top_k"]


@dataclass
class Record:
    """One evaluated layout."""

    generation: int
    hash: str
    layers: dict[str, Choice]
    params: int
    val_acc: float
    seconds: float


@dataclass
class SearchStrategy:
    """Settings every strategy has. Generation 0 holds ``population`` layouts: the user's
    ``seed_layouts`` (made legal), then random legal layouts."""

    budget: float = 20000  # max trainable params of the support tensors (the head is apart); an int after the check
    min_params: float = 0  # an int after the check
    population: int = 50
    generations: int = 20
    max_tries: int = 50  # re-draws of an illegal child before it is repaired to the budget
    seed: int = 0
    seed_layouts: list[str] = field(default_factory=list)  # layout JSON files for the first population
    space: Optional[str] = None  # expected space preset of the supernet (checked)
    lora_first: bool = True  # generation 0 holds the LoRA layouts (B = LoRA_r everywhere) that fit the budget
    # Re-rank the best `rerank` layouts, with the LoRA layouts that fit, by a short stand-alone
    # training on train scored on val (the supernet's inherited accuracy ranks them only roughly).
    rerank: int = 0
    rerank_epochs: Optional[int] = None  # null: the supernet's trainer.epochs
    # The lrs each re-ranked layout is trained at; it scores at its best. One lr favours the
    # layouts that learn fastest at it (A / D paths at a low lr), not the best ones.
    rerank_lrs: list[float] = field(default_factory=list)  # empty: the supernet's optim.lr

    name: ClassVar[str] = ""
    #: True for a strategy that searches the accuracy / params front rather than one best
    #: layout: the search job then also writes the front, the pipeline retrains its points.
    multi_objective: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.budget = param_count(self.budget, "search.budget", "set the most trainable params a layout may have (support tensors, "
                                  "head apart) as a whole number, e.g. search.budget=20000")
        self.min_params = param_count(self.min_params, "search.min_params", f"use a whole number in [0, search.budget={self.budget}]", minimum=0)
        require(self.min_params <= self.budget, "search.min_params", self.min_params, f"use a whole number in [0, search.budget={self.budget}]")
        require(self.population >= 1, "search.population", self.population, "use at least 1 layout per generation, e.g. 50")
        require(self.generations >= 1, "search.generations", self.generations, "use at least 1 generation, e.g. 20")
        require(self.max_tries >= 1, "search.max_tries", self.max_tries, "use at least 1 draw before a repair, e.g. 50")
        require(self.seed >= 0, "search.seed", self.seed, "use a seed >= 0")
        require(self.rerank >= 0, "search.rerank", self.rerank, "use 0 (rank by the supernet alone) or the number of top layouts to retrain, e.g. 4")
        require(self.rerank_epochs is None or self.rerank_epochs >= 1, "search.rerank_epochs", self.rerank_epochs,
                "use null (the supernet's epochs) or at least 1 epoch")
        require(all(lr > 0 for lr in self.rerank_lrs) and len(set(self.rerank_lrs)) == len(self.rerank_lrs), "search.rerank_lrs",
                list(self.rerank_lrs), "use distinct lrs > 0, e.g. [1e-3,3e-3,1e-2], or [] for the supernet's optim.lr")

    def aim(self, budgets: list[int]) -> SearchStrategy:
        """These settings for a search whose results are read at ``budgets`` (the pipeline's):
        a strategy that can aim at several budgets at once returns a copy that does."""
        return self

    def aim_identity(self) -> dict:
        """What ``aim`` set, for a run's identity (a resumed run must aim the same way)."""
        return {}

    def size(self, generation: int) -> int:
        """How many candidates ``generation`` proposes."""
        return self.population

    def initial(self, ops: LayoutOps, seeds: tuple[dict[str, Choice], ...], rng: random.Random) -> list[dict[str, Choice]]:
        """Generation 0: ``seeds`` (the user's, then the LoRA layouts) made legal, then
        random legal layouts up to ``size(0)``."""
        return ops.initial(self.size(0), seeds, rng)

    def propose(self, generation: int, records: list[Record], ops: LayoutOps, rng: random.Random) -> list[dict[str, Choice]]:
        """The candidates of one generation (≥ 1) from everything evaluated so far: the one
        method a strategy implements (generation 0 is ``initial``'s)."""
        raise NotImplementedError


#: The name this base class had before 0.3: a search strategy is its settings dataclass.
SearchConfig = SearchStrategy

STRATEGIES: dict[str, type[SearchStrategy]] = {}


def register_strategy(name: str):
    """Class decorator: register a strategy's settings dataclass under ``name``."""

    def add(cls: type[SearchStrategy]) -> type[SearchStrategy]:
        if name in STRATEGIES:
            raise ValueError(f"search strategy {name!r} is registered twice")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return add


def get_strategy(name: str, **settings) -> SearchStrategy:
    """The strategy registered as ``name`` with ``settings``; an unknown name or a setting
    the strategy does not have is one clear error."""
    if name not in STRATEGIES:
        raise JobError(f"search strategy {name!r} is unknown; strategies are {sorted(STRATEGIES)} (search=<name>)")
    try:
        return STRATEGIES[name](**settings)
    except TypeError as err:
        raise JobError(f"search={name}: {err}") from None


def strategy_name(strategy: SearchStrategy) -> str:
    if not type(strategy).name:
        raise JobError(f"{type(strategy).__name__} is not a registered search strategy; use one of {sorted(STRATEGIES)}")
    return type(strategy).name


def top_k(records: list[Record], k: int) -> list[Record]:
    """Best first; ties broken by fewer params, then generation order (deterministic)."""
    return sorted(records, key=lambda r: (-r.val_acc, r.params))[:k]
