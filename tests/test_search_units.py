"""Search building blocks against direct computations: the Pareto front, the report
table, strategy settings, and the strategy registry's errors."""
import random

import pandas as pd
import pytest

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
    assert set(STRATEGIES) == {"evolution", "random", "optuna"}
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
