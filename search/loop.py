"""The generation loop every strategy runs in: propose, drop layouts already seen, score
the rest, record. A pure function of the seed and the scores, so a search resumed from
its records proposes exactly what an uninterrupted one would."""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

from tqdm import tqdm

from glora.spaces import Layout

from .operators import Layers, LayoutOps
from .strategy import Record, SearchStrategy, strategy_name, top_k

__all__ = ["Scorer", "generation_rng", "run_generations", "timed"]

#: Scores a list of layouts: (val acc, seconds) for each, in order.
Scorer = Callable[[list[Layout]], list[tuple[float, float]]]


def generation_rng(seed: int, generation: int) -> random.Random:
    return random.Random(seed * 100_003 + generation)


def run_generations(
    strategy: SearchStrategy,
    ops: LayoutOps,
    score: Scorer,
    seeds: Sequence[Layers] = (),
    records: list[Record] | None = None,
    start: int = 0,
    on_generation: Callable[[int, list[Record]], None] | None = None,
    show_progress: bool = True,
) -> list[Record]:
    """Run generations ``start`` .. ``strategy.generations - 1``; ``records`` holds what a
    resumed search evaluated before. ``on_generation(done, records)`` follows every
    generation (the caller saves its state there)."""
    records = list(records or [])
    seen = {r.hash for r in records}
    name = strategy_name(strategy)
    bar = tqdm(range(start, strategy.generations), desc=f"search ({name})", unit="gen", initial=start,
               total=strategy.generations, dynamic_ncols=True, disable=not show_progress)
    for generation in bar:
        rng = generation_rng(strategy.seed, generation)
        if generation == 0:
            lora = tuple(ops.lora_layouts(rng)) if strategy.lora_first else ()
            proposals = strategy.initial(ops, (*seeds, *lora), rng)
        else:
            proposals = strategy.propose(generation, records, ops, rng)
        fresh: dict[str, Layout] = {}  # never evaluate a layout twice ...
        _add_new(fresh, proposals, ops, seen, limit=None)
        for _ in range(ops.max_tries * strategy.size(generation)):  # ... but keep the generation full:
            if len(fresh) >= strategy.size(generation):  # random legal layouts stand in for the duplicates
                break
            _add_new(fresh, [ops.random(rng)], ops, seen, limit=strategy.size(generation))
        for layout, (acc, seconds) in zip(fresh.values(), score(list(fresh.values()))):
            records.append(Record(generation, layout.hash, layout.layers, layout.trainable_params, acc, seconds))
            seen.add(layout.hash)
        best = top_k(records, 1)[0]
        bar.set_postfix(best=f"{best.val_acc:.3f}", params=best.params, evals=len(records))
        if on_generation is not None:
            on_generation(generation + 1, records)
    bar.close()
    return records


def _add_new(fresh: dict[str, Layout], proposals, ops: LayoutOps, seen: set[str], limit: int | None) -> None:
    """Add the proposals not evaluated before (by hash) to ``fresh``, up to ``limit`` in all."""
    for layers in proposals:
        if limit is not None and len(fresh) >= limit:
            return
        layout = ops.layout(layers)
        if layout.hash not in seen and layout.hash not in fresh:
            fresh[layout.hash] = layout


def timed(evaluate: Callable[[Layout], float]) -> Scorer:
    """A scorer from a one-layout evaluator, timing each layout."""

    def score(layouts: list[Layout]) -> list[tuple[float, float]]:
        out = []
        for layout in layouts:
            tick = time.time()
            out.append((evaluate(layout), round(time.time() - tick, 4)))
        return out

    return score
