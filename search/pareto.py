"""Two-objective search (NSGA-II): higher validation accuracy *and* fewer trainable
params, so one search gives the whole accuracy / params trade-off between
``search.min_params`` and ``search.budget`` instead of one layout at the budget.

A point is ``(params, acc)``: params to minimise, accuracy to maximise. The parents of a
generation are chosen from every record so far (not from a carried-over population), so
``propose`` is a pure function of the records and the generation's rng and a resumed
search proposes exactly what an uninterrupted one would.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

from glora.run.errors import param_count, require

from .operators import Layers, LayoutOps
from .strategy import Record, SearchStrategy, register_strategy, top_k

__all__ = ["ParetoEvolution", "Point", "crowding_distance", "dominates", "front", "hypervolume", "non_dominated_sort", "nsga_order", "staircase"]

#: (trainable params, validation accuracy)
Point = tuple[float, float]


def dominates(p: Point, q: Point) -> bool:
    """``p`` is at least as good as ``q`` on both objectives and better on one (equal
    points do not dominate each other)."""
    return p[0] <= q[0] and p[1] >= q[1] and (p[0] < q[0] or p[1] > q[1])


def non_dominated_sort(points: Sequence[Point]) -> list[list[int]]:
    """Indices of ``points`` by front: the first front is dominated by nothing, the k-th
    only by points of earlier fronts. Each front's indices ascend.

    Two objectives allow one sweep: in order of params (then accuracy, best first) a
    point joins the first front whose latest member does not dominate it; that member
    has the front's highest accuracy so far, the only one that could dominate it.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    fronts: list[list[int]] = []
    for i in order:
        k = next((k for k, f in enumerate(fronts) if not dominates(points[f[-1]], points[i])), len(fronts))
        if k == len(fronts):
            fronts.append([])
        fronts[k].append(i)
    return [sorted(f) for f in fronts]


def crowding_distance(points: Sequence[Point], front: Sequence[int]) -> list[float]:
    """How much room each member of ``front`` has on the front (in ``front``'s order),
    summed over both objectives, each scaled by the front's range. A member at either end
    of an objective's range is infinite (ends are always kept); a member that shares its
    value with another member gets nothing from that objective (copies add no spread), so
    the result does not depend on the order of ``front``."""
    out = [0.0] * len(front)
    for axis in (0, 1) if front else ():
        values = [points[i][axis] for i in front]
        lo, hi = min(values), max(values)
        count = Counter(values)
        distinct = sorted(count)
        rank = {v: j for j, v in enumerate(distinct)}
        for n, v in enumerate(values):
            if v in (lo, hi):
                out[n] = math.inf
            elif count[v] == 1:
                out[n] += (distinct[rank[v] + 1] - distinct[rank[v] - 1]) / (hi - lo)
    return out


def nsga_order(points: Sequence[Point]) -> list[int]:
    """Indices of ``points`` best first: by front, then by crowding distance (largest
    first), then by index (deterministic)."""
    key: dict[int, tuple[int, float]] = {}
    for k, f in enumerate(non_dominated_sort(points)):
        for i, d in zip(f, crowding_distance(points, f)):
            key[i] = (k, -d)
    return sorted(range(len(points)), key=lambda i: (*key[i], i))


def _points(records: Sequence[Record]) -> list[Point]:
    return [(float(r.params), float(r.val_acc)) for r in records]


def staircase(points: Sequence[Point]) -> list[int]:
    """The one Pareto front every report, plot and front file uses: indices of the points
    nothing dominates, one per params count (the first of equal points), by params, so
    accuracy rises strictly along it."""
    first = non_dominated_sort(points)[0] if points else []
    kept: dict[float, int] = {}
    for i in sorted(first, key=lambda i: (points[i][0], i)):
        kept.setdefault(points[i][0], i)
    return list(kept.values())


def front(records: Sequence[Record]) -> list[Record]:
    """The records no other record dominates, by params (then accuracy, best first)."""
    first = non_dominated_sort(_points(records))
    chosen = [records[i] for i in first[0]] if first else []
    return sorted(chosen, key=lambda r: (r.params, -r.val_acc))


def hypervolume(records_or_points: Sequence[Record | Point], ref_params: float, ref_acc: float = 0.0) -> float:
    """The area dominated by the points up to the reference (``ref_params`` params,
    ``ref_acc`` accuracy), params scaled by ``ref_params``: 0 when nothing beats the
    reference, at most ``1 - ref_acc`` for accuracies in [0, 1]. One number to compare
    the fronts of strategies (or seeds) searched under the same budget."""
    if not ref_params > 0:
        raise ValueError(f"ref_params={ref_params!r}: use the budget the fronts were searched under (> 0)")
    pts = [(r.params, r.val_acc) if isinstance(r, Record) else (r[0], r[1]) for r in records_or_points]
    inside = sorted((p / ref_params, a) for p, a in pts if p < ref_params and a > ref_acc)
    area, best = 0.0, ref_acc
    for n, (x, acc) in enumerate(inside):  # by params: each step adds the strip up to the next point's params
        best = max(best, acc)
        right = inside[n + 1][0] if n + 1 < len(inside) else 1.0
        area += (right - x) * (best - ref_acc)
    return area


@register_strategy("pareto")
@dataclass
class ParetoEvolution(SearchStrategy):
    """NSGA-II over (accuracy up, params down): the best ``population`` records by
    (front, crowding) are the parents; each child is a crossover of two binary-tournament
    winners (with probability ``crossover_prob``, else a copy of the first), then mutated
    per layer with ``mutation_prob``; every child is legal under min_params and budget.
    The first generation is spread over [min_params, budget] (``initial``).

    ``targets``: budgets inside the window the user will pick from (the pipeline passes
    ``pipeline.budgets``). A ``target_share`` of every generation is then aimed at them in
    turn, as a single-budget evolution would be: children of the best records under the
    target, legal under it. NSGA-II alone spreads its evaluations over the whole window
    and leaves its points short of any one budget (measured in benchmarks/front.py)."""

    crossover_prob: float = 0.9
    mutation_prob: float = 0.2  # per layer, as in Evolution
    targets: list[float] = field(default_factory=list)
    target_share: float = 0.5

    multi_objective: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 <= self.crossover_prob <= 1, "search.crossover_prob", self.crossover_prob,
                "use a probability in [0, 1] that a child is a crossover of two parents, e.g. 0.9")
        require(0 <= self.mutation_prob <= 1, "search.mutation_prob", self.mutation_prob, "use a per-layer probability in [0, 1], e.g. 0.2")
        require(0 <= self.target_share <= 1, "search.target_share", self.target_share,
                "use the share in [0, 1] of each generation aimed at search.targets, e.g. 0.5")
        fix = f"give whole-number budgets inside the window [search.min_params={self.min_params}, search.budget={self.budget}], or []"
        self.targets = [param_count(t, "search.targets", fix, minimum=0) for t in self.targets]
        require(all(self.min_params <= t <= self.budget for t in self.targets), "search.targets", list(self.targets), fix)

    def aim(self, budgets: list[int]) -> ParetoEvolution:
        """Aimed at ``budgets`` unless the user chose ``search.targets`` already."""
        return self if self.targets else replace(self, targets=list(budgets))

    def aim_identity(self) -> dict:
        return {"targets": sorted(self.targets), "target_share": self.target_share} if self.targets else {}

    def _aimed(self, size: int) -> list[float]:
        """The target of each aimed child of a generation of ``size`` (targets in turn)."""
        targets = sorted(self.targets)
        return [targets[i % len(targets)] for i in range(round(size * self.target_share))] if targets else []

    def initial(self, ops: LayoutOps, seeds: tuple[Layers, ...], rng: random.Random) -> list[Layers]:
        """The seeds made legal, then (with ``targets``) random layouts under each target in
        turn, then random layouts spread over the window: the i-th of n drawn under
        ``min_params + (i + 1) / n`` of it. Uniform draws pile up just under the budget
        (on the default ViT only 2% of them fit under 16k params at all), so without this
        the cheap end of the front starts empty and must be reached by mutation alone."""
        out = [ops.repair(s, rng) for s in seeds]
        aimed = self._aimed(max(0, self.size(0) - len(out)))
        out += [ops.random_under(t, rng) for t in aimed]
        lo, hi, n = ops.budget.min_params, ops.budget.max_params, self.size(0) - len(out)
        return out + [ops.random_under(lo + (hi - lo) * (i + 1) // n, rng) for i in range(n)]

    def propose(self, generation: int, records: list[Record], ops: LayoutOps, rng: random.Random) -> list[Layers]:
        parents = [records[i].layers for i in nsga_order(_points(records))[: self.population]]
        if not parents:
            return [ops.random(rng) for _ in range(self.size(generation))]
        aimed = self._aimed(self.size(generation))
        capped = {t: ops.capped(t) for t in set(aimed)}
        pools = {t: [r.layers for r in top_k([r for r in records if c.legal(r.layers)], max(2, self.population // 5))]
                 for t, c in capped.items()}  # each target's parents: the best records under it, as Evolution's top-k
        seen = {r.hash for r in records}

        def fresh(make) -> Layers:
            """A child not evaluated or proposed before, if ``max_tries`` draws find one: the
            loop would replace a duplicate by a draw from the whole window, which is not
            where an aimed child belongs (children of close parents often repeat one)."""
            for _ in range(ops.max_tries):
                child = make()
                key = ops.layout(child).hash
                if key not in seen:
                    break
            seen.add(key)
            return child

        children = [fresh(lambda n=n, t=t: _aimed_child(n, pools[t], capped[t], rng, self.mutation_prob)) for n, t in enumerate(aimed)]

        def tournament() -> Layers:  # parents are best first: the earlier of two draws wins
            return parents[min(rng.randrange(len(parents)), rng.randrange(len(parents)))]

        def bred() -> Layers:
            first, second = tournament(), tournament()
            child = ops.crossover(first, second, rng) if rng.random() < self.crossover_prob else first
            return ops.mutate(child, rng, self.mutation_prob)

        return children + [fresh(bred) for _ in range(self.size(generation) - len(aimed))]


def _aimed_child(n: int, parents: list[Layers], ops: LayoutOps, rng: random.Random, mutation_prob: float) -> Layers:
    """A child legal under ``ops``' budget, as Evolution makes them: a crossover of two of
    ``parents`` (even ``n``) or a mutation of one (odd); a random layout without parents."""
    if not parents:
        return ops.random(rng)
    if n % 2 == 0 and len(parents) > 1:
        return ops.crossover(*rng.sample(parents, 2), rng)
    return ops.mutate(rng.choice(parents), rng, mutation_prob)
