"""The two-objective search against direct definitions: fronts and crowding by brute
force, hypervolume as the area of a union of rectangles, proposals legal and a pure
function of the seed, and a front that spans the params window rather than piling up at
the budget."""
import itertools
import math
import random

import pytest

from glora.run.errors import ConfigError
from glora.search import Budget, Evolution, LayoutOps, ParetoEvolution, get_strategy, run_generations
from glora.search.loop import generation_rng
from glora.search.pareto import crowding_distance, dominates, front, hypervolume, non_dominated_sort, nsga_order
from glora.search.strategy import Record


def _random_points(seed, n=40):
    """Coarse grids so that ties on one objective and exact duplicates are common."""
    rng = random.Random(seed)
    return [(rng.randrange(0, 12) * 100, rng.randrange(0, 10) / 10) for _ in range(n)]


def _naive_fronts(points):
    """Peel: the points no remaining point dominates, again and again."""
    left, fronts = set(range(len(points))), []
    while left:
        first = {i for i in left if not any(dominates(points[j], points[i]) for j in left)}
        fronts.append(sorted(first))
        left -= first
    return fronts


def _naive_crowding(points, members):
    """Per objective: infinite at the front's min or max; else the gap between the nearest
    other values below and above (0 when another member has the same value)."""
    out = []
    for i in members:
        total = 0.0
        for axis in (0, 1):
            values = [points[j][axis] for j in members]
            v, lo, hi = points[i][axis], min(values), max(values)
            if v in (lo, hi):
                total = math.inf
                continue
            below = max(points[j][axis] for j in members if j != i and points[j][axis] <= v)
            above = min(points[j][axis] for j in members if j != i and points[j][axis] >= v)
            total += (above - below) / (hi - lo)
        out.append(total)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_non_dominated_sort_equals_peeling(seed):
    points = _random_points(seed) + [(500, 0.5), (500, 0.5), (0, 0.0)]  # duplicates and the params optimum
    assert non_dominated_sort(points) == _naive_fronts(points)


def test_equal_points_share_a_front_and_tied_params_do_not():
    points = [(100, 0.5), (100, 0.5), (100, 0.4), (200, 0.5), (50, 0.3)]
    assert non_dominated_sort(points) == [[0, 1, 4], [2, 3]]
    assert non_dominated_sort([]) == []


@pytest.mark.parametrize("seed", range(8))
def test_crowding_distance_equals_the_definition_in_any_order(seed):
    points = _random_points(seed, n=60)
    for members in non_dominated_sort(points):
        distances = crowding_distance(points, members)
        assert distances == pytest.approx(_naive_crowding(points, members))
        shuffled = random.Random(seed).sample(members, len(members))
        again = dict(zip(shuffled, crowding_distance(points, shuffled)))
        assert [again[i] for i in members] == distances  # the front's order does not matter
        ends = {min(members, key=lambda i: points[i]), max(members, key=lambda i: points[i])}
        assert all(d == math.inf for i, d in zip(members, distances) if i in ends)
    assert crowding_distance(points, []) == [] and crowding_distance(points, [0]) == [math.inf]


def test_nsga_order_puts_fronts_first_and_ends_before_the_crowded_middle():
    points = [(100, 0.5), (200, 0.6), (210, 0.61), (400, 0.9), (300, 0.4)]
    order = nsga_order(points)
    assert order[-1] == 4  # the only dominated point comes last
    assert order[:2] == [0, 3]  # the ends (infinite), ties by index
    assert order[2:4] == [2, 1]  # then the roomier middle point: 1 sits close to its neighbour 2


def _area_of_union(points, ref_params, ref_acc):
    """Brute force: cut the plane at every coordinate and add each covered cell."""
    boxes = [(p / ref_params, a) for p, a in points if p < ref_params and a > ref_acc]
    xs = sorted({x for x, _ in boxes} | {1.0})
    ys = sorted({ref_acc} | {a for _, a in boxes})
    area = 0.0
    for x0, x1 in itertools.pairwise(xs):
        for y0, y1 in itertools.pairwise(ys):
            if any(x <= x0 and a >= y1 for x, a in boxes):
                area += (x1 - x0) * (y1 - y0)
    return area


@pytest.mark.parametrize("seed", range(6))
def test_hypervolume_equals_the_area_of_the_union(seed):
    points = _random_points(seed) + [(1500, 0.95), (300, -0.1)]  # beyond the reference: ignored
    for ref_acc in (0.0, 0.25):
        assert hypervolume(points, 1000, ref_acc) == pytest.approx(_area_of_union(points, 1000, ref_acc))
    records = [Record(0, str(i), {}, int(p), a, 0.0) for i, (p, a) in enumerate(points)]
    assert hypervolume(records, 1000) == hypervolume(points, 1000)


def test_hypervolume_corners():
    assert hypervolume([], 10) == 0.0 and hypervolume([(10, 1.0)], 10) == 0.0
    assert hypervolume([(0, 1.0)], 10) == 1.0 and hypervolume([(5, 1.0), (0, 0.5)], 10) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="ref_params"):
        hypervolume([(0, 1.0)], 0)


def test_front_of_records_is_the_first_front_by_params():
    points = _random_points(3)
    records = [Record(0, str(i), {}, p, a, 0.0) for i, (p, a) in enumerate(points)]
    best = front(records)
    assert sorted(r.hash for r in best) == sorted(str(i) for i in _naive_fronts(points)[0])
    assert [r.params for r in best] == sorted(r.params for r in best)
    assert [r.val_acc for r in best] == sorted(r.val_acc for r in best)  # fewer params, lower accuracy
    assert front([]) == []


# ---- the strategy on a real layout space -------------------------------------------------


@pytest.fixture(scope="module")
def template():
    from conftest import make_vit

    from glora.spaces import Layout, Space
    from glora.supernet import wrap

    return Layout.sample(wrap(make_vit(), Space.preset("large")), Space.preset("large"), seed=0)


def _score(budget):
    """Accuracy that rises with params and saturates, plus a fixed per-layout term: a real
    trade-off, with no training."""

    def score(layouts):
        return [(1 - 0.9 * math.exp(-3 * x.trainable_params / budget) + 0.05 * int(x.hash[:8], 16) / 16**8, 0.0) for x in layouts]

    return score


def _search(strategy, template, **settings):
    budget, low = 12288, 1024  # 12288: LoRA_8 on B of every layer of the tiny ViT
    ops = LayoutOps(template, Budget(budget, low))
    search = strategy(budget=budget, min_params=low, **settings)
    return ops, run_generations(search, ops, _score(budget), show_progress=False)


def test_proposals_are_legal_full_and_a_pure_function_of_the_seed(template):
    ops, records = _search(ParetoEvolution, template, population=10, generations=2)
    search = ParetoEvolution(budget=12288, min_params=1024, population=10, mutation_prob=0.5)
    proposals = search.propose(2, records, ops, generation_rng(0, 2))
    assert len(proposals) == 10 and all(ops.legal(p) for p in proposals)
    assert search.propose(2, records, ops, generation_rng(0, 2)) == proposals
    assert search.propose(2, records, ops, generation_rng(1, 2)) != proposals
    tight = LayoutOps(template, Budget(1500, 1400))  # a narrow window: children are repaired into it
    assert all(tight.legal(p) for p in search.propose(2, records, tight, generation_rng(0, 2)))


def test_the_first_generation_spreads_over_the_window(template):
    """Uniform draws pile up under the budget; the front search's first generation covers
    [min_params, budget] evenly instead, each random layout under its own step of it."""
    ops = LayoutOps(template, Budget(12288, 1024))
    search = ParetoEvolution(budget=12288, min_params=1024, population=12)
    first = search.initial(ops, (), generation_rng(0, 0))
    assert len(first) == 12 and all(ops.legal(p) for p in first)
    caps = [1024 + (12288 - 1024) * (i + 1) // 12 for i in range(12)]
    assert all(ops.params(p) <= cap for p, cap in zip(first, caps))
    assert ops.params(first[0]) < 1024 + (12288 - 1024) / 6  # the cheap end is there from the start
    uniform = [ops.params(ops.random(random.Random(i))) for i in range(12)]
    assert min(uniform) > max(ops.params(p) for p in first[:3])
    assert search.initial(ops, (), generation_rng(0, 0)) == first  # a pure function of the rng
    seeded = search.initial(ops, (first[5],), generation_rng(0, 0))
    assert seeded[0] == first[5] and len(seeded) == 12


def test_resumed_search_proposes_what_an_uninterrupted_one_would(template):
    _, full = _search(ParetoEvolution, template, population=8, generations=4)
    ops, part = _search(ParetoEvolution, template, population=8, generations=2)
    resumed = run_generations(ParetoEvolution(budget=12288, min_params=1024, population=8, generations=4), ops,
                              _score(12288), records=part, start=2, show_progress=False)
    assert [(r.generation, r.hash, r.val_acc) for r in resumed] == [(r.generation, r.hash, r.val_acc) for r in full]
    assert all(1024 <= r.params <= 12288 for r in full)


@pytest.mark.parametrize("seed", range(3))
def test_the_front_spans_the_window_and_beats_single_objective_evolution(template, seed):
    """Evolution chases accuracy towards the budget; NSGA-II keeps the cheap end of the
    front alive, so its front covers most of [min_params, budget] and dominates more."""
    _, records = _search(ParetoEvolution, template, population=16, generations=10, seed=seed)
    best, window = front(records), 12288 - 1024
    assert (best[-1].params - best[0].params) / window > 0.5
    assert any(r.generation == 9 for r in best)  # the last generation still improves the front
    last = [r.params for r in records if r.generation == 9]
    assert (max(last) - min(last)) / window > 0.6  # the population stays spread (parents by accuracy alone: 0.3-0.55)
    _, single = _search(Evolution, template, population=16, generations=10, seed=seed)
    assert hypervolume(records, 12288) > hypervolume(single, 12288)


def test_aimed_children_are_legal_under_their_targets(template):
    """With ``targets``, a ``target_share`` of each generation is aimed at them in turn:
    the first generation draws under each target, later ones breed from the best records
    under it, and every aimed child fits its target."""
    ops = LayoutOps(template, Budget(12288, 1024))
    search = ParetoEvolution(budget=12288, min_params=1024, population=12, targets=[6000, 3000], target_share=0.5)
    first = search.initial(ops, (), generation_rng(0, 0))
    assert len(first) == 12 and all(ops.legal(p) for p in first)
    params = [ops.params(p) for p in first[:6]]
    assert all(p <= t for p, t in zip(params, [3000, 6000] * 3))  # targets in turn, smallest first
    assert min(params[1::2]) > 3000  # under 6000 but not piled under 3000: draws land just under their cap
    _, records = _search(ParetoEvolution, template, population=12, generations=2)
    children = search.propose(2, records, ops, generation_rng(0, 2))
    assert len(children) == 12 and all(ops.legal(c) for c in children)
    assert all(ops.params(c) <= t for c, t in zip(children[:6], [3000, 6000] * 3))
    hashes = [ops.layout(c).hash for c in children]  # new layouts: the loop would replace a repeat by an unaimed draw
    assert len(set(hashes)) == len(hashes) and not set(hashes) & {r.hash for r in records}
    best_under = {t: max(r.val_acc for r in records if r.params <= t) for t in (3000, 6000)}
    assert all(best_under[t] > 0 for t in best_under)
    assert search.propose(2, records, ops, generation_rng(0, 2)) == children  # a pure function of the rng
    plain = ParetoEvolution(budget=12288, min_params=1024, population=12)
    assert plain.propose(2, records, ops, generation_rng(0, 2)) != children
    whole = ParetoEvolution(budget=12288, min_params=1024, population=12, targets=[2000], target_share=1.0)
    assert all(ops.params(c) <= 2000 for c in whole.propose(2, records, ops, generation_rng(0, 2)))


def test_aiming_at_targets_finds_better_layouts_under_them(template):
    """The point of targets: under each target the aimed front search holds better layouts
    than plain NSGA-II at the same number of evaluations (mean over seeds: the scorer's
    per-layout term is noise; it rewards params, so "better under t" means closer to t)."""
    targets, gains = [2048, 4096], {2048: [], 4096: []}
    for seed in range(4):
        _, plain = _search(ParetoEvolution, template, population=12, generations=6, seed=seed)
        _, aimed = _search(ParetoEvolution, template, population=12, generations=6, seed=seed, targets=targets, target_share=0.5)
        assert len(aimed) == len(plain)
        for t in targets:
            gains[t].append(max(r.val_acc for r in aimed if r.params <= t) - max(r.val_acc for r in plain if r.params <= t))
    assert all(sum(g) / len(g) > 0.005 for g in gains.values()), gains


def test_settings_are_checked_and_composed_from_hydra():
    assert get_strategy("pareto", crossover_prob=0.5).crossover_prob == 0.5
    for bad in ({"crossover_prob": 1.5}, {"mutation_prob": -0.1}, {"target_share": 2}, {"targets": [30000]}, {"targets": [500], "min_params": 1000}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ParetoEvolution(**bad)
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    from glora.jobs.app import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        assert OmegaConf.to_object(compose("search", overrides=["search=pareto"])).search == ParetoEvolution()
        cfg = OmegaConf.to_object(compose("search", overrides=["search=pareto", "search.mutation_prob=0.3", "experiment=smoke"]))
        assert cfg.search == ParetoEvolution(mutation_prob=0.3, population=8, generations=3)
        with pytest.raises(ConfigCompositionException, match="top_k"):
            compose("search", overrides=["search=pareto", "search.top_k=3"])


@pytest.mark.parametrize("seed", range(4))
def test_the_front_file_the_plots_and_the_report_share_one_front(seed):
    """front.csv (front_records), the plots and the search report (pareto_front) draw the same
    staircase: the naive non-dominated set, one point per params count, the first evaluated."""
    import pandas as pd

    from glora.search.plots import pareto_front
    from glora.stages.front import front_records

    rng = random.Random(seed)
    points = [(rng.randrange(0, 20) * 100, rng.choice([0.1, 0.2, 0.3, 0.4, 0.5])) for _ in range(50)]  # repeats on purpose
    records = [Record(0, str(i), {}, p, a, 0.0) for i, (p, a) in enumerate(points)]
    history = pd.DataFrame({"trainable_params": [p for p, _ in points], "val_acc": [a for _, a in points], "layout_hash": [r.hash for r in records]})
    naive = sorted({points[i] for i in _naive_fronts(points)[0]})
    first_of = {pt: str(points.index(pt)) for pt in naive}
    assert [(r.params, r.val_acc) for r in front_records(records)] == naive
    assert [r.hash for r in front_records(records)] == [first_of[pt] for pt in naive]
    drawn = pareto_front(history)
    assert list(zip(drawn["trainable_params"], drawn["val_acc"])) == naive and list(drawn["layout_hash"]) == [first_of[pt] for pt in naive]
