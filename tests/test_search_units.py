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


def test_lr_multipliers_scale_each_support_tensor_and_nothing_else():
    from conftest import make_vit
    from glora.spaces import Space
    from glora.supernet import glora_layers, param_groups, wrap

    model = wrap(make_vit(), Space.preset("large"), modules_to_train=("head",))
    groups = {g["name"]: g for g in param_groups(model, 1e-3, {"A": 30, "D": 5})}
    layer = next(iter(glora_layers(model).values()))
    assert groups["A"]["lr"] == pytest.approx(3e-2) and groups["D"]["lr"] == pytest.approx(5e-3) and groups["rest"]["lr"] == 1e-3
    ids = lambda name: {id(p) for p in groups[name]["params"]}  # noqa: E731
    assert id(layer.Ad) in ids("A") and id(layer.Au) in ids("A") and id(layer.D) in ids("D")
    assert id(layer.Bd) in ids("rest") and id(model.head.weight) in ids("rest")
    assert sum(len(g["params"]) for g in groups.values()) == sum(p.requires_grad for p in model.parameters())
    (only,) = param_groups(model, 1e-3, {})
    assert [id(p) for p in only["params"]] == [id(p) for p in model.parameters() if p.requires_grad]  # the old single group
    # A fixed lr ignores lr and the multiplier; the others still follow lr.
    for lr in (1e-3, 1e-2):
        groups = {g["name"]: g for g in param_groups(model, lr, {"A": 30, "D": 30}, {"A": 0.05, "B": None, "E": 2e-3})}
        assert groups["A"]["lr"] == 0.05 and groups["E"]["lr"] == 2e-3
        assert groups["D"]["lr"] == pytest.approx(30 * lr) and groups["rest"]["lr"] == lr and "B" not in groups
        assert id(layer.Ad) in {id(p) for p in groups["A"]["params"]} and id(layer.E) in {id(p) for p in groups["E"]["params"]}
        assert sum(len(g["params"]) for g in groups.values()) == sum(p.requires_grad for p in model.parameters())


def test_fixed_lrs_reach_the_optimizer(cache_dir, monkeypatch):
    """The config path: optim.fixed_lr.A is the A group's lr in the optimizer fit builds,
    and the schedule scales it like every other group."""
    import torch

    from glora.stages.setup import wrapped_backbone
    from glora.training import fit
    from conftest import job_config

    cfg = job_config("train", cache_dir, "optim.fixed_lr.A=0.05", "optim.lr=1e-3", "trainer.max_steps=1", "optim.warmup_epochs=0")
    model, _, task = wrapped_backbone(cfg, cfg.space.build())
    seen = {}
    real_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        seen.update({g["name"]: g["lr"] for g in self.param_groups})
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    fit(model, task, cfg.optim, cfg.trainer, ("train", "val"))
    assert seen["A"] == pytest.approx(0.05) and seen["D"] == pytest.approx(30e-3) and seen["rest"] == pytest.approx(1e-3)


@pytest.mark.parametrize("init, bound", [("kaiming", lambda r, c: (1 / c) ** 0.5), ("xavier", lambda r, c: (6 / (r + c)) ** 0.5)])
def test_up_factor_inits(init, bound):
    from conftest import make_vit
    from glora.spaces import Space
    from glora.supernet import glora_layers, wrap

    layer = next(iter(glora_layers(wrap(make_vit(), Space.preset("large"), up_init=init)).values()))
    r, c = layer.Au.shape
    assert layer.Au.abs().max().item() <= bound(r, c) + 1e-7 and layer.Au.abs().max().item() > 0.5 * bound(r, c)
    assert layer.Ad.abs().max().item() == 0  # identity at init either way
