"""Budget-legal layouts: random sampling, repair, mutation and crossover.

Works on plain choice dicts (layer -> A–E options); every operator draws from the
``random.Random`` it is given, so a search is a pure function of its seed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from glora.run.errors import JobError
from glora.spaces import TENSORS, Choice, Layout, Option, option_cost

__all__ = ["Budget", "BudgetError", "Layers", "LayoutOps"]

Layers = dict[str, Choice]


class BudgetError(JobError):
    """A budget no layout of this space can meet."""


@dataclass(frozen=True)
class Budget:
    max_params: int
    min_params: int = 0


class LayoutOps:
    """Legal-layout operators for one model under one space and budget."""

    def __init__(self, template: Layout, budget: Budget, max_tries: int = 50):
        assert template.shapes is not None
        self.template = template
        self.budget = budget
        self.max_tries = max_tries
        self.options = {
            name: tuple(template.space.options_for(t, shape) for t in TENSORS) for name, shape in template.shapes.items()
        }
        self.costs = {
            name: tuple({o: option_cost(t, o, shape.out_features, shape.in_features) for o in opts} for t, opts in zip(TENSORS, self.options[name]))
            for name, shape in template.shapes.items()
        }
        most = sum(max(c.values()) for row in self.costs.values() for c in row)
        if budget.min_params > budget.max_params:
            raise BudgetError(f"search.min_params={budget.min_params} is above search.budget={budget.max_params}")
        if budget.min_params > most:
            raise BudgetError(
                f"search.min_params={budget.min_params} is infeasible: the largest layout of this space has {most} "
                "trainable params; lower search.min_params or use a larger space"
            )
        if budget.max_params < 0:
            raise BudgetError(f"search.budget={budget.max_params} is negative")
        least = sum(min(c.values()) for row in self.costs.values() for c in row)
        if budget.max_params < least:  # a space without `none` for some tensor has a floor
            raise BudgetError(
                f"search.budget={budget.max_params} is infeasible: the smallest layout of this space has {least} "
                "trainable params; raise search.budget or allow 'none' in space.options"
            )
        self.most = most

    # ---- counting -------------------------------------------------------------------
    def params(self, layers: Layers) -> int:
        return sum(self.costs[n][i][o] for n, choice in layers.items() for i, o in enumerate(choice))

    def legal(self, layers: Layers) -> bool:
        return self.budget.min_params <= self.params(layers) <= self.budget.max_params

    def layout(self, layers: Layers, **fields) -> Layout:
        t = self.template
        return Layout(dict(layers), t.model, t.space, t.shapes, budget=self.budget.max_params, **fields)

    # ---- operators ------------------------------------------------------------------
    def lora_layouts(self, rng: random.Random) -> list[Layers]:
        """The layouts a LoRA user would run: B = ``LoRA_r`` on every layer, the rest
        ``none``, at each rank of the space that fits the budget (largest first); if none
        fits, the smallest rank's, repaired to the budget."""
        out = []
        for rank in self.template.space.ranks:
            lora = Option("lora", rank)
            if not all(lora in opts[TENSORS.index("B")] for opts in self.options.values()):
                continue
            layers = {n: tuple(lora if t == "B" else Option("none") for t in TENSORS) for n in self.options}
            out.append(layers)
        legal = [layers for layers in out if self.legal(layers)]
        return legal or [self.repair(out[-1], rng)] if out else []

    def initial(self, size: int, seeds: tuple[Layers, ...], rng: random.Random) -> list[Layers]:
        """A first generation: the ``seeds`` made legal, then random legal layouts up to ``size``."""
        out = [self.repair(s, rng) for s in seeds]
        return out + [self.random(rng) for _ in range(size - len(out))]

    def random_under(self, cap: int, rng: random.Random) -> Layers:
        """A legal layout with at most ``cap`` params (where ``cap`` is in the window):
        uniform draws until one fits under ``cap``, else the last one repaired down to it.
        Uniform draws mostly land far above a small cap, so this is how a first generation
        reaches the cheap end of the window."""
        under = LayoutOps(self.template, Budget(min(cap, self.budget.max_params)), self.max_tries).random(rng)
        return under if self.legal(under) else self.repair(under, rng)

    def capped(self, cap: int) -> "LayoutOps":
        """These operators under the tighter budget ``min(cap, budget)`` (same min_params):
        what a search aiming at a smaller budget inside its window mutates and repairs with."""
        return LayoutOps(self.template, Budget(min(int(cap), self.budget.max_params), self.budget.min_params), self.max_tries)

    def random(self, rng: random.Random) -> Layers:
        """A legal layout: uniform draws until one fits (bounded), else the last one repaired."""
        return self._until_legal(lambda: {n: tuple(rng.choice(o) for o in opts) for n, opts in self.options.items()}, rng)

    def mutate(self, parent: Layers, rng: random.Random, prob: float) -> Layers:
        """Each layer, with probability ``prob``, gets a fresh random A–E choice."""

        def child() -> Layers:
            return {
                n: tuple(rng.choice(o) for o in self.options[n]) if rng.random() < prob else c for n, c in parent.items()
            }

        return self._until_legal(child, rng)

    def crossover(self, a: Layers, b: Layers, rng: random.Random) -> Layers:
        """Each layer's whole choice from one parent or the other."""
        return self._until_legal(lambda: {n: a[n] if rng.random() < 0.5 else b[n] for n in a}, rng)

    def repair(self, layers: Layers, rng: random.Random) -> Layers:
        """Make ``layers`` legal by random single-tensor moves to a cheaper (over budget)
        or dearer (under min_params) option; always ends, since all-none costs 0 and the
        feasibility of min_params was checked up front."""
        layers = dict(layers)
        for _ in range(100_000):
            if self.legal(layers):
                return layers
            over = self.params(layers) > self.budget.max_params
            moves = []
            for name, choice in layers.items():
                for i, option in enumerate(choice):
                    cost = self.costs[name][i]
                    better = [o for o in self.options[name][i] if (cost[o] < cost[option] if over else cost[o] > cost[option])]
                    if better:
                        moves.append((name, i, better))
            name, i, better = rng.choice(moves)
            option: Option = rng.choice(better)
            layers[name] = layers[name][:i] + (option,) + layers[name][i + 1 :]  # type: ignore[assignment]
        raise BudgetError(
            f"no layout found with trainable params in [{self.budget.min_params}, {self.budget.max_params}]; "
            "widen the window between search.min_params and search.budget"
        )

    def _until_legal(self, draw, rng: random.Random) -> Layers:
        for _ in range(self.max_tries):
            layers = draw()
            if self.legal(layers):
                return layers
        return self.repair(layers, rng)
