"""Optuna's TPE sampler over the per-layer categorical A–E choices.

Each generation rebuilds an in-memory study from every evaluated layout and a sampler
seeded by (seed, generation), so a resumed search proposes exactly what an uninterrupted
one would. Budget-infeasible proposals are told to Optuna as *pruned* (never evaluated,
never counted) and asked again, up to a bounded number of tries; then the last one is
repaired to the budget.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from glora.spaces import TENSORS, parse_option

from .operators import LayoutOps
from .strategy import Record, SearchStrategy, register_strategy

optuna.logging.set_verbosity(optuna.logging.WARNING)


@register_strategy("optuna")
@dataclass
class OptunaSearch(SearchStrategy):
    """``population`` TPE proposals per generation, after a random first generation."""

    def propose(self, generation: int, records: list[Record], ops: LayoutOps, rng: random.Random):
        dists = {
            f"{name}/{t}": CategoricalDistribution([str(o) for o in opts])
            for name, row in ops.options.items() for t, opts in zip(TENSORS, row) if len(opts) > 1
        }
        sampler = optuna.samplers.TPESampler(seed=self.seed * 100_003 + generation, n_startup_trials=self.population)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for r in records:
            study.add_trial(create_trial(params=self._params(r.layers, dists), distributions=dists, value=r.val_acc))
        out: list = []
        while len(out) < self.size(generation):
            for _attempt in range(ops.max_tries):
                trial = study.ask(dists)
                layers = self._layers(trial.params, ops)
                if ops.legal(layers):
                    break
                study.tell(trial, state=TrialState.PRUNED)
            else:
                layers = ops.repair(layers, rng)
            out.append(layers)
        return out

    @staticmethod
    def _params(layers, dists) -> dict[str, str]:
        return {key: str(layers[key.rsplit("/", 1)[0]][TENSORS.index(key.rsplit("/", 1)[1])]) for key in dists}

    @staticmethod
    def _layers(params: dict[str, str], ops: LayoutOps):
        return {
            name: tuple(parse_option(params[f"{name}/{t}"]) if f"{name}/{t}" in params else opts[0] for t, opts in zip(TENSORS, row))
            for name, row in ops.options.items()
        }
