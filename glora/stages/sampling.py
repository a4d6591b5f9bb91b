"""How supernet training picks the layouts each step trains (the ``sampling`` section).

One-shot supernets trained on uniform per-layer draws separate good layouts from bad but
order layouts of one size poorly: uniform draws spread over every size, while a search at
a budget only ever compares layouts near it. The remedies from the NAS literature, here
as options chosen on validation data (``benchmarks/ranking.py``):

* ``rule=budget``: each step draws one of ``budgets`` and trains a random legal layout
  with trainable params in ``[(1 - band) · b, b]`` (the search's own random operator), so
  the shared weights are trained where the search will read them;
* ``rule=sandwich``: each step trains the largest layout, the smallest and ``randoms``
  random ones (uniform, or in a budget band when ``budgets`` is set), averaging their
  losses into one update;
* ``distill=true`` (with the sandwich rule): the random layouts learn the largest
  layout's soft predictions instead of the labels (in-place distillation).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from torch import nn

from glora.run.errors import require
from glora.search import Budget, LayoutOps
from glora.spaces import Layout
from glora.supernet import StepLayout, extreme_layers, space_of
from glora.training import step_seed

__all__ = ["RULES", "SamplingConfig", "step_plan"]

RULES = ("uniform", "budget", "sandwich")


@dataclass
class SamplingConfig:
    """Which layouts a supernet training step trains (see the module docstring)."""

    rule: str = "uniform"  # uniform | budget | sandwich
    budgets: list[float] = field(default_factory=list)  # budget rule (and sandwich's random members): the search's budgets
    band: float = 0.1  # a budget-drawn layout has trainable params in [(1 - band) * b, b]
    randoms: int = 2  # sandwich: random layouts per step beside the largest and the smallest
    distill: bool = False  # sandwich: the random layouts learn the largest layout's soft predictions

    def __post_init__(self) -> None:
        require(self.rule in RULES, "sampling.rule", self.rule, f"use one of {list(RULES)}")
        require(0 < self.band < 1, "sampling.band", self.band, "use a fraction in (0, 1), e.g. 0.1")
        require(self.randoms >= 0, "sampling.randoms", self.randoms, "use 0 or more random layouts per step")
        for i, budget in enumerate(self.budgets):
            require(budget == budget and 0 < budget < float("inf"), f"sampling.budgets[{i}]", budget,
                    "use a positive, finite number of trainable params, e.g. 4096")
        require(self.rule != "budget" or self.budgets, "sampling.budgets", list(self.budgets),
                "the budget rule needs the search's budgets, e.g. sampling.budgets=[4096,16384]")
        require(not self.distill or self.rule == "sandwich", "sampling.distill", self.distill,
                "in-place distillation learns from the largest layout, which only sampling.rule=sandwich trains; set both")

    def describe(self) -> str:
        if self.rule == "uniform":
            return "uniform per-layer draws (one random layout a step)"
        band = f"a random layout in [{1 - self.band:g}·b, b] for b drawn from {[int(b) for b in self.budgets]}"
        if self.rule == "budget":
            return band
        randoms = band if self.budgets else "uniform random layouts"
        return (f"sandwich: the largest, the smallest and {self.randoms} × {randoms} a step"
                + (", the random ones distilled from the largest" if self.distill else ""))


def step_plan(model: nn.Module, cfg: SamplingConfig, seed: int) -> Optional[Callable[[int], Sequence[StepLayout]]]:
    """The training loop's ``plan``: step -> the layouts that step trains (None for the
    uniform rule, the loop's own default). Every draw comes from a generator seeded by
    (``seed``, step), so resumed and multi-process runs train the same layouts."""
    if cfg.rule == "uniform":
        return None
    template = Layout.sample(model, space_of(model), seed=0)
    bands = [LayoutOps(template, Budget(int(b), int((1 - cfg.band) * b))) for b in cfg.budgets]

    def banded(rng: random.Random, role: str, distill: bool) -> StepLayout:
        if not bands:
            return StepLayout(distill=distill, role=role)  # the sampler's per-layer draw
        ops = rng.choice(bands)
        return StepLayout(ops.random(rng), distill=distill, role=role)

    if cfg.rule == "budget":
        return lambda step: (banded(random.Random(step_seed(seed, step)), "budget", False),)
    largest = StepLayout(extreme_layers(model, largest=True), teacher=cfg.distill, role="largest")
    smallest = StepLayout(extreme_layers(model, largest=False), distill=cfg.distill, role="smallest")

    def sandwich(step: int) -> Sequence[StepLayout]:
        rng = random.Random(step_seed(seed, step))
        return (largest, smallest, *(banded(rng, "random", cfg.distill) for _ in range(cfg.randoms)))

    return sandwich

