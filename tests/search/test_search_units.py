"""Search building blocks against direct computations: the Pareto front, the report
table, strategy settings, and the strategy registry's errors."""
import random

import pandas as pd
import pytest
from conftest import job_config

from glora.run.errors import JobError
from glora.search import STRATEGIES, Evolution, RandomSearch, get_strategy, strategy_name
from glora.search.plots import pareto_front
from glora.search.report import markdown_table


def _naive_front(rows):
    """Every row no other row dominates (≤ params and ≥ acc, one strictly)."""
    return sorted(
        (p, a) for p, a in rows
        if not any((q <= p and b >= a) and (q < p or b > a) for q, b in rows)
    )


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_equals_the_naive_definition(seed):
    rng = random.Random(seed)
    rows = [(rng.randrange(0, 50) * 100, round(rng.random(), 2)) for _ in range(60)]
    rows = list(dict.fromkeys(rows))  # the search never evaluates a layout twice
    history = pd.DataFrame(rows, columns=["trainable_params", "val_acc"])
    front = pareto_front(history)
    assert sorted(zip(front["trainable_params"], front["val_acc"])) == _naive_front(rows)


def test_markdown_table_renders_every_cell():
    table = pd.DataFrame({"method": ["lora", "glora"], "params": [4096, 3889], "acc": [0.83, 0.775]})
    lines = markdown_table(table).splitlines()
    assert lines[0] == "| method | params | acc |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| lora | 4096 | 0.8300 |" and lines[3] == "| glora | 3889 | 0.7750 |"


def test_strategies_refuse_settings_they_do_not_have():
    assert set(STRATEGIES) == {"evolution", "random", "optuna", "pareto"}
    with pytest.raises(JobError, match="top_k"):
        get_strategy("random", top_k=3)
    with pytest.raises(JobError, match="unknown"):
        get_strategy("annealing")
    assert strategy_name(get_strategy("evolution", top_k=3)) == "evolution"


def test_evolution_counts_follow_the_population_unless_set():
    assert Evolution().parents == 10 and Evolution().children == (25, 25)
    assert Evolution(population=8).children == (4, 4) and Evolution(population=8).parents == 2
    assert Evolution(top_k=3, crossover=1, mutation=2).size(1) == 3 and Evolution().size(0) == 50
    assert RandomSearch(population=7).size(5) == 7


def test_the_first_generation_holds_the_lora_layouts_that_fit():
    """B = LoRA_r on every layer (the rest none) at every rank of the space under the
    budget: the search always weighs what a LoRA user would have run."""
    from conftest import make_vit

    from glora.search import Budget, LayoutOps, run_generations
    from glora.spaces import Layout, Option, Space
    from glora.supernet import wrap

    model = wrap(make_vit(), Space.preset("large"))
    template = Layout.sample(model, Space.preset("large"), seed=0)
    lora = {r: Layout.uniform(model, Space.preset("large"), B=f"LoRA_{r}") for r in (8, 4)}
    budget = lora[8].trainable_params  # both ranks fit
    ops = LayoutOps(template, Budget(budget))
    seen = []
    records = run_generations(Evolution(population=6, generations=1), ops, lambda ls: [(0.0, 0.0)] * len(ls), show_progress=False)
    seen = {r.hash for r in records}
    assert lora[8].hash in seen and lora[4].hash in seen and len(records) == 6
    small = LayoutOps(template, Budget(lora[4].trainable_params))  # only rank 4 fits
    assert [ls["blocks.0.attn.qkv"][1] for ls in small.lora_layouts(random.Random(0))] == [Option("lora", 4)]
    records = run_generations(Evolution(population=6, generations=1, lora_first=False), ops, lambda ls: [(0.0, 0.0)] * len(ls),
                              show_progress=False)
    assert lora[8].hash not in {r.hash for r in records}
    tiny = LayoutOps(template, Budget(lora[4].trainable_params // 2))  # none fits: rank 4's, repaired
    (repaired,) = tiny.lora_layouts(random.Random(0))
    assert tiny.legal(repaired)



@pytest.mark.parametrize("override, field", [
    ("search.budget=0.5", "search.budget"), ("search.budget=inf", "search.budget"), ("search.budget=nan", "search.budget"),
    ("search.min_params=10.5", "search.min_params"), ("search.budget=1000 search.min_params=2000", "search.min_params"),
])
def test_a_budget_that_is_no_whole_number_of_params_is_refused_where_it_is_read(tmp_path, override, field):
    from glora.run.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"^{field.replace('.', '[.]')}=.* cannot work: .*whole number"):
        job_config("search", tmp_path, *override.split(" "))


def test_budgets_become_ints_once_at_the_config(tmp_path):
    from glora.run.errors import ConfigError

    cfg = job_config("search", tmp_path, "search.budget=2e4", "search.min_params=1e3")
    assert (cfg.search.budget, cfg.search.min_params) == (20000, 1000) and type(cfg.search.budget) is int
    pipe = job_config("pipeline", tmp_path, "pipeline.budgets=[5e3,2e4]", "retrain.budget=3e4")
    assert pipe.pipeline.budgets == [5000, 20000] and all(type(b) is int for b in pipe.pipeline.budgets) and pipe.retrain.budget == 30000
    for override, field in (("pipeline.budgets=[inf]", "pipeline.budgets"), ("pipeline.budgets=[2e4,0.5]", "pipeline.budgets"),
                            ("retrain.budget=1.5", "retrain.budget")):
        with pytest.raises(ConfigError, match=rf"^{field.replace('.', '[.]')}="):
            job_config("pipeline", tmp_path, override)


def test_aim_points_a_front_search_at_the_budgets_and_leaves_one_budget_searches_alone():
    from glora.search import Evolution, ParetoEvolution

    evolution = Evolution(budget=3000)
    assert evolution.aim([1000, 2000]) is evolution and evolution.aim_identity() == {}
    front = ParetoEvolution(budget=3000).aim([2000, 1000])
    assert front.targets == [2000, 1000] and front.aim_identity() == {"targets": [1000, 2000], "target_share": 0.5}
    chosen = ParetoEvolution(budget=3000, targets=[1500])
    assert chosen.aim([1000, 2000]).targets == [1500]  # the user's own targets stand
