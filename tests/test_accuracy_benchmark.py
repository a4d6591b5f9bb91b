"""benchmarks/accuracy.py's tables: the verdict every closing note quotes is checked
against a direct computation on a small runs table with known numbers."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # its sibling module machine.py
_spec = importlib.util.spec_from_file_location("accuracy_benchmark", BENCHMARKS / "accuracy.py")
accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accuracy)

PARAMS = {"glora_search_100": 90, "lora_r1": 100, "lora_r1_alpha_r": 100, "lora_r2": 200, "glora_random_100": 95, "probe": 0}


@pytest.fixture
def runs() -> pd.DataFrame:
    """3 seeds x 2 tasks per method, accuracies drawn so that every method differs; lora_r2
    is the best LoRA but above the budget, so it must not be the rival."""
    rng = np.random.default_rng(0)
    level = {"glora_search_100": 0.80, "lora_r1": 0.78, "lora_r1_alpha_r": 0.79, "lora_r2": 0.90, "glora_random_100": 0.70, "probe": 0.50}
    rows = [{"method": m, "task": t, "seed": s, "acc": level[m] + rng.normal(0, 0.02), "lr": lr,
             "adapter_params": PARAMS[m], "head_params": 10}
            for m in level for t, lr in (("a", 1e-3), ("b", 1e-2)) for s in range(3)]
    return pd.DataFrame(rows)


def test_overall_is_the_mean_over_tasks_and_its_std_is_over_seeds(runs):
    table = accuracy.summarise(runs)
    for method, rows in runs.groupby("method"):
        by_seed = [rows[rows.seed == s].acc.mean() for s in range(3)]
        assert table.loc[method, "overall_mean"] == pytest.approx(np.mean(by_seed), abs=5e-5)
        assert table.loc[method, "overall"] == f"{np.mean(by_seed):.3f} ± {np.std(by_seed, ddof=1):.3f}"
        a = rows[rows.task == "a"].acc
        assert table.loc[method, "a"] == f"{a.mean():.3f} ± {a.std():.3f} (lr 0.001)"
        assert table.loc[method, "adapter_params"] == PARAMS[method]


def test_verdict_takes_the_best_rival_that_fits_and_pairs_seeds(runs):
    table = accuracy.summarise(runs)
    out = accuracy.verdict(table, [100], runs).set_index("rival_family")
    lora = out.loc["PEFT LoRA"]
    fits = {m: table.loc[m, "overall_mean"] for m in ("lora_r1", "lora_r1_alpha_r")}  # lora_r2 (200 params) does not fit
    assert lora["best_rival"] == max(fits, key=fits.get) and lora["rival_params"] == 100
    ours = table.loc["glora_search_100", "overall_mean"]
    assert lora["difference"] == pytest.approx(ours - fits[lora["best_rival"]], abs=1e-4)
    seed_mean = lambda m: np.array([runs[(runs.method == m) & (runs.seed == s)].acc.mean() for s in range(3)])  # noqa: E731
    assert lora["paired_std"] == pytest.approx(np.std(seed_mean("glora_search_100") - seed_mean(lora["best_rival"]), ddof=1), abs=1e-4)
    assert out.loc["random layout", "best_rival"] == "glora_random_100"
    assert "PEFT GLoRA uniform" not in out.index  # no such rows: no such comparison, rather than a made-up one


def test_grid_edges_counts_the_choices_at_either_end(runs):
    assert accuracy._grid_edges(runs, [1e-3, 3e-3, 1e-2]) == (
        "Of the 12 lr choices, 6 took the grid's largest (0.01) and 6 its smallest (0.001).")
    assert accuracy._grid_edges(runs, [1e-3]) == ""


def test_verdict_weighs_glora_own_lora_layout_as_a_family(runs):
    extra = runs[runs.method == "lora_r1"].assign(method="glora_lora_r1", acc=lambda d: d.acc - 0.01, adapter_params=100)
    table = accuracy.summarise(pd.concat([runs, extra]))
    out = accuracy.verdict(table, [100]).set_index("rival_family")
    assert out.loc["GLoRA LoRA layout", "best_rival"] == "glora_lora_r1"
    assert out.loc["PEFT LoRA", "best_rival"] != "glora_lora_r1"  # "lora_r" must not match GLoRA's rows


def test_glora_lora_layout_has_peft_lora_params_and_needs_the_rank_in_the_space(tiny_vit):
    from conftest import make_vit

    from glora.spaces import Space
    from glora.supernet import GLoRAConfig

    space = Space(ranks=(4, 2))
    layout = accuracy.lora_layout(space, 2)(make_vit())
    assert {tuple(map(str, row)) for row in layout.layers.values()} == {("none", "LoRA_2", "none", "none", "none")}
    model = accuracy.glora_layout(accuracy.lora_layout(space, 2), 0, GLoRAConfig())(tiny_vit)
    peft = accuracy.peft_lora(2)(make_vit())
    lora_elements = sum(p.numel() for n, p in peft.named_parameters() if "lora_" in n)
    assert model.adapter_params == lora_elements > 0
    with pytest.raises(ValueError, match="LoRA_1 is not in the space"):  # refused, not quietly dropped
        accuracy.lora_layout(space, 1)(make_vit())


def test_a_run_of_some_methods_keeps_the_other_methods_rows(tmp_path):
    path = tmp_path / "final.csv"
    pd.DataFrame([{"method": m, "seed": s, "acc": 0.5} for m in ("a", "b", "c") for s in range(2)]).to_csv(path, index=False)
    kept = accuracy._others(path, ["b"])
    assert sorted({r["method"] for r in kept}) == ["a", "c"] and len(kept) == 4
    assert accuracy._others(tmp_path / "missing.csv", ["b"]) == []


def test_plot_draws_each_family_at_its_mean_accuracy(runs, tmp_path):
    extra = runs[runs.method == "lora_r2"].assign(method="glora_lora_r2", acc=lambda d: d.acc - 0.05)
    data = pd.concat([runs, extra])
    fig = accuracy.plot(data, tmp_path / "plot.png", "t")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    mean = data.groupby("method").acc.mean()
    glora_lora = lines["GLoRA LoRA layout r=2"]
    assert list(glora_lora.get_xdata()) == [200] and glora_lora.get_ydata()[0] == pytest.approx(mean["glora_lora_r2"])
    lora = lines["PEFT LoRA r=1,2 (alpha 8)"]
    assert list(lora.get_xdata()) == [100, 200]
    assert lora.get_ydata() == pytest.approx([mean["lora_r1"], mean["lora_r2"]])
    assert lines["probe (0 params)"].get_ydata()[0] == pytest.approx(mean["probe"])


def test_methods_run_and_are_listed_searched_first_and_budgets_in_numeric_order():
    names = ["probe", "glora_random_294912", "lora_r2", "glora_search_294912", "glora_lora_r1", "glora_search_73728", "lora_r1"]
    assert sorted(names, key=accuracy._run_order) == [
        "glora_search_73728", "glora_search_294912", "lora_r1", "glora_random_294912", "glora_lora_r1", "lora_r2", "probe"]
