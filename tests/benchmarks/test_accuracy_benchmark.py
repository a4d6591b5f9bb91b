"""benchmarks/accuracy.py's tables: the verdict every closing note quotes is checked
against a direct computation on a small runs table with known numbers."""
import importlib.util
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # its sibling module machine.py
_spec = importlib.util.spec_from_file_location("accuracy_benchmark", BENCHMARKS / "accuracy.py")
accuracy = importlib.util.module_from_spec(_spec)
sys.modules["accuracy_benchmark"] = accuracy  # its dataclasses look their module up
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


def test_paired_tests_take_the_best_rival_that_fits_and_pair_task_and_seed(runs):
    out = accuracy.paired_tests(runs, [100]).set_index("rival_family")
    lora = out.loc["PEFT LoRA"]
    mean = runs.groupby("method").acc.mean()
    fits = {m: mean[m] for m in ("lora_r1", "lora_r1_alpha_r")}  # lora_r2 (200 params) does not fit
    assert lora["best_rival"] == max(fits, key=fits.get) and lora["rival_params"] == 100
    pair = lambda m: runs[runs.method == m].set_index(["task", "seed"]).acc.sort_index()  # noqa: E731
    diff = pair("glora_search_100") - pair(lora["best_rival"])
    assert lora["pairs"] == 6
    assert lora["difference"] == pytest.approx(diff.mean(), abs=1e-4)
    assert lora["paired_std"] == pytest.approx(diff.std(ddof=1), abs=1e-4)
    assert out.loc["random layout", "best_rival"] == "glora_random_100"
    assert "PEFT GLoRA uniform" not in out.index  # no such rows: no such comparison, rather than a made-up one


def test_paired_tests_weigh_glora_own_lora_layout_as_a_family(runs):
    extra = runs[runs.method == "lora_r1"].assign(method="glora_lora_r1", acc=lambda d: d.acc - 0.01, adapter_params=100)
    out = accuracy.paired_tests(pd.concat([runs, extra]), [100]).set_index("rival_family")
    assert out.loc["GLoRA LoRA layout", "best_rival"] == "glora_lora_r1"
    assert out.loc["PEFT LoRA", "best_rival"] != "glora_lora_r1"  # "lora_r" must not match GLoRA's rows


def _pairs(ours: list[float], rival: list[float], searches: int = 1) -> pd.DataFrame:
    """A runs table of one searched budget (``searches`` searches, each at ``ours``) and
    one LoRA rival, paired over (task, seed): 2 tasks x n/2 seeds."""
    cells = [("a" if i % 2 == 0 else "b", i // 2) for i in range(len(ours))]
    rows = [{"method": f"glora_search_100_s{k}", "task": t, "seed": s, "acc": ours[i] + (0.01 if k else -0.01), "adapter_params": 90 + k}
            for k in range(searches) for i, (t, s) in enumerate(cells)] if searches > 1 else \
           [{"method": "glora_search_100", "task": t, "seed": s, "acc": ours[i], "adapter_params": 90} for i, (t, s) in enumerate(cells)]
    rows += [{"method": "lora_r1", "task": t, "seed": s, "acc": rival[i], "adapter_params": 100} for i, (t, s) in enumerate(cells)]
    return pd.DataFrame(rows)


def test_paired_t_p_value_matches_a_direct_computation():
    from scipy import stats as sps

    ours = [0.81, 0.79, 0.84, 0.80, 0.83, 0.78, 0.82, 0.80]
    rival = [0.80, 0.80, 0.81, 0.78, 0.82, 0.79, 0.80, 0.77]
    row = accuracy.paired_tests(_pairs(ours, rival, searches=2), [100]).iloc[0]  # two searches, +-0.01: their mean is ``ours``
    d = np.array(ours) - np.array(rival)
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    assert row["pairs"] == 8 and row["searched"] == "glora_search_100 (mean of 2 searches)" and row["searched_params"] == 90
    assert row["difference"] == pytest.approx(d.mean(), abs=1e-4) and row["paired_std"] == pytest.approx(d.std(ddof=1), abs=1e-4)
    assert row["t_p"] == pytest.approx(2 * sps.t.sf(abs(t), len(d) - 1), rel=1e-6)
    assert row["wilcoxon_p"] == pytest.approx(sps.wilcoxon(d).pvalue, rel=1e-6)


def test_a_clear_win_is_a_win_a_clear_loss_a_loss_and_noise_a_tie():
    rng = np.random.default_rng(1)
    rival = list(0.7 + rng.normal(0, 0.02, 10))
    win = accuracy.paired_tests(_pairs([r + 0.05 + rng.normal(0, 0.005) for r in rival], rival), [100]).iloc[0]
    assert win["verdict"] == "win" and win["t_p"] < 0.05 and win["wilcoxon_p"] < 0.05
    loss = accuracy.paired_tests(_pairs([r - 0.05 + rng.normal(0, 0.005) for r in rival], rival), [100]).iloc[0]
    assert loss["verdict"] == "loss"
    noise = accuracy.paired_tests(_pairs([r + rng.normal(0, 0.02) for r in rival], rival), [100]).iloc[0]
    assert noise["verdict"] == "tie" and noise["t_p"] >= 0.05
    few = accuracy.paired_tests(_pairs([0.9, 0.91, 0.92, 0.93], [0.8, 0.8, 0.81, 0.8]), [100]).iloc[0]
    assert np.isnan(few["wilcoxon_p"]) and few["pairs"] == 4  # under 6 pairs the signed-rank test cannot reach 0.05: none
    same = accuracy.paired_tests(_pairs([0.8] * 6, [0.8] * 6), [100]).iloc[0]
    assert same["verdict"] == "tie" and np.isnan(same["wilcoxon_p"])


def test_edge_choices_name_each_choice_at_either_end_of_its_grid(runs):
    grids = {m: [1e-3, 3e-3, 1e-2] for m in runs.method.unique()}
    edges = accuracy.edge_choices(runs, {**grids, "probe": [1e-3, 1e-2, 1e-1]})
    assert "a/lora_r1 lr 0.001 (smallest of [0.001, 0.003, 0.01])" in edges
    assert "b/lora_r1 lr 0.01 (largest of [0.001, 0.003, 0.01])" in edges
    assert len(edges) == 11  # 6 methods x 2 tasks, but probe's 0.01 is inside its grid
    assert accuracy.edge_choices(runs, {m: [1e-3] for m in grids}) == []  # a single value is no choice


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
    searches = ["probe_logreg", "glora_search_73728_s1", "glora_search_294912_s0", "glora_search_73728_s0", "probe", "full_ft"]
    assert sorted(searches, key=accuracy._run_order) == [
        "glora_search_73728_s0", "glora_search_73728_s1", "glora_search_294912_s0", "full_ft", "probe_logreg", "probe"]


# ---- plans: parsing, and the report's refusal of a run that differs from its plan --------------
PLANS = BENCHMARKS / "plans"
plans = accuracy.plans


def _write_plan(folder: Path, name: str, **changes) -> Path:
    """A small plan (the smoke backbone, 1 task, 2 seeds, 2 searches) with ``changes``;
    a change of None drops the field."""
    fields = {"name": name, "tasks": "[count]", "budgets": "[4096]", "seeds": 2, "searches": 2, "epochs": 1, "supernet_epochs": 1,
              "methods": "[searched, lora_r1, probe_logreg]", "lrs": "{adapters: [1.0e-3, 1.0e-2], full_ft: [1.0e-4]}",
              "full_ft_warmup_epochs": 0, "probe_C": "[0.1, 1, 10]", "overrides": "[experiment=smoke, data.rank_images=0]",
              "labels": 1000, "test": "once", **changes}
    path = folder / f"{name}.yaml"
    path.write_text("# a test plan\n" + "".join(f"{k}: {v}\n" for k, v in fields.items() if v is not None))
    return path


def _refusal(call) -> str:
    with pytest.raises(SystemExit) as refused:
        call()
    assert refused.value.code == 2
    message = str(refused.value)
    assert "\n" not in message and message  # one line
    return message


def test_the_committed_plans_parse_and_the_embedded_one_is_a_headline_run():
    plan = plans.load_plan(PLANS / "embedded-headline.yaml")
    assert plan.headline and plan.tasks == ["count", "orientation", "texture"] and plan.budgets == [4096, 16384]
    assert (plan.seeds, plan.searches, plan.epochs, plan.supernet_epochs, plan.labels) == (5, 2, 10, 100, 1000)
    assert plan.lrs.full_ft == [1e-5, 3e-5, 1e-4, 3e-4] and plan.full_ft_warmup_epochs == 2 and plan.probe_C == [0.01, 0.1, 1, 10, 100]
    known = plans.method_names(plan.budgets, plan.searches)
    methods = plans.resolve_methods(plan.methods, known)
    assert {"glora_search_4096_s0", "glora_search_16384_s1", "glora_random_4096", "lora_r2_alpha_r", "probe_logreg"} <= set(methods)
    assert "glora_search_4096" not in methods and "probe" not in methods
    assert plans.method_grid(plan, "full_ft") == plan.lrs.full_ft and plans.method_grid(plan, "lora_r1") == plan.lrs.adapters
    real = plans.load_plan(PLANS / "real-headline.yaml")
    assert real.headline and "experiment=real_cpu" in real.overrides and real.budgets == [73728, 147456]


def test_a_plan_with_fewer_seeds_parses_but_is_no_headline(tmp_path):
    assert not plans.load_plan(_write_plan(tmp_path, "few", seeds=3)).headline
    assert not plans.load_plan(_write_plan(tmp_path, "one", searches=1)).headline


@pytest.mark.parametrize("change, says", [
    ({"methods": "[searched, lora_r1, loraa_r1]"}, "methods[2]='loraa_r1' matches no method; known: glora_search_4096_s0"),
    ({"tasks": "[count, colour]"}, "tasks[1]='colour': unknown task; known: digits, count"),
    ({"seeds": "five"}, "seeds: Value 'five' of type 'str' could not be converted to Integer"),
    ({"probe_c": "[1]"}, "probe_c: unknown field"),
    ({"labels": None}, "labels: missing"),
    ({"overrides": "[trainer.epochs=3]"}, "overrides[0]='trainer.epochs=3': the plan's field epochs sets trainer.epochs"),
    ({"test": "twice"}, "test='twice'"),
    ({"tune_seeds": 0}, "tune_seeds=0"),
])
def test_a_bad_plan_is_one_line_naming_the_field_and_exit_code_2(tmp_path, change, says):
    message = _refusal(lambda: plans.load_plan(_write_plan(tmp_path, "bad", **change)))
    assert message.startswith(f"plan {tmp_path / 'bad.yaml'}: ") and says in message


def test_a_missing_plan_and_a_flag_the_plan_sets_stop_the_command_line(tmp_path, capsys):
    message = _refusal(lambda: accuracy.main(["--plan", str(tmp_path / "none.yaml"), "--report"]))
    assert "no such file" in message
    assert capsys.readouterr().err.strip().count("\n") == 0  # main prints the one line
    message = _refusal(lambda: accuracy.main(["--plan", str(_write_plan(tmp_path, "p")), "--seeds", "3"]))
    assert "--seeds is the plan's to set (its field seeds)" in message
    rank = _write_plan(tmp_path, "rank", overrides="[experiment=smoke, data.rank_images=300]")
    message = _refusal(lambda: accuracy.main(["--plan", str(rank), "--report", "--work", str(tmp_path / "work")]))
    assert "labels=1000 but the config's data.rank_images=300 gives the search 1300 labelled images; set labels: 1300" in message


@pytest.fixture
def planned_run(tmp_path):
    """A finished run of a small plan, faked: its recorded copy and every planned row."""
    path = _write_plan(tmp_path, "tiny")
    work = tmp_path / "work" / "tiny"
    plans.record(path, work)
    rng = np.random.default_rng(0)
    level = {"glora_search_4096_s0": 0.8, "glora_search_4096_s1": 0.82, "lora_r1": 0.75, "probe_logreg": 0.6}
    rows = [{"task": "count", "method": m, "seed": s, "lr": 0.1 if m == "probe_logreg" else 1e-3, "eval_split": "test",
             "adapter_params": {"lora_r1": 4096}.get(m, 4000 if m.startswith("glora") else 0), "head_params": 10,
             "acc": level[m] + rng.normal(0, 0.01), "train_acc": 0.9, "seconds": 1.0, "plan": "tiny",
             "search": int(m[-1]) if m.startswith("glora_search") else None} for m in level for s in range(2)]
    (work / "count").mkdir()
    pd.DataFrame(rows).to_csv(work / "count" / "final.csv", index=False)
    args = ["--plan", str(path), "--report", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    return path, work, args


def test_the_report_of_a_run_that_matches_its_plan_states_the_plan_and_its_hash(planned_run, tmp_path):
    path, _, args = planned_run
    accuracy.main(args)
    text = (tmp_path / "out" / "accuracy-tiny.md").read_text()
    assert f"Plan: `{path}`, git blob `{plans.blob_hash(path)}`" in text and "**not committed when the run started**" in text
    assert "**Not a headline run**: 2 retraining seeds" in text
    assert "searched GLoRA 1,000" in text and "every other method 1,000" in text
    assert "| 4096 | glora_search_4096 (mean of 2 searches) |" in text and "PEFT LoRA" in text
    assert "count/lora_r1 lr 0.001 (smallest of [0.001, 0.01])" in text and "count/probe_logreg C 0.1 (smallest" in text


def test_the_report_refuses_a_plan_changed_since_the_run_started(planned_run):
    path, _, args = planned_run
    path.write_text(path.read_text().replace("seeds: 2", "seeds: 3"))
    message = _refusal(lambda: accuracy.main(args))
    assert "field seeds changed since the run started: 2 then, 3 now" in message
    path.write_text(path.read_text().replace("seeds: 3", "seeds: 2").replace("# a test plan", "# edited"))
    assert "its text changed since the run started" in _refusal(lambda: accuracy.main(args))


def test_the_report_refuses_a_missing_cell_and_an_extra_row(planned_run):
    _, work, args = planned_run
    final = work / "count" / "final.csv"
    rows = pd.read_csv(final)
    rows[~((rows.method == "glora_search_4096_s1") & (rows.seed == 1))].to_csv(final, index=False)
    assert "cell (method=glora_search_4096_s1, task=count, seed=1, search=1) has no row" in _refusal(lambda: accuracy.main(args))
    pd.concat([rows, rows.iloc[[0]].assign(method="lora_r2")]).to_csv(final, index=False)
    assert "row (method=lora_r2, task=count, seed=0) is not in the plan" in _refusal(lambda: accuracy.main(args))
    rows.assign(plan=lambda d: d.plan.where(d.method != "lora_r1", "other")).to_csv(final, index=False)
    assert "was run under plan 'other'" in _refusal(lambda: accuracy.main(args))
    rows.assign(lr=lambda d: d.lr.where(d.method != "lora_r1", 3e-3)).to_csv(final, index=False)
    assert "chose 0.003, outside its grid" in _refusal(lambda: accuracy.main(args))


# ---- the logistic probe: C chosen on val ----------------------------------------------------------
def _blobs(rng, n: int, shift: float = 2.0, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % classes
    return rng.normal(0, 1, (n, 8)) + shift * np.eye(8)[y], y


def test_the_logistic_probe_chooses_c_on_val_inside_its_grid_and_separates_separable_features():
    from glora.probe import logreg_grid

    rng = np.random.default_rng(0)
    features = {split: _blobs(rng, n, shift=5.0, classes=3) for split, n in (("train", 200), ("val", 60), ("test", 300))}
    out = logreg_grid(features, [0.01, 0.1, 1, 10, 100])
    assert out["C"] in [0.01, 0.1, 1, 10, 100] and out["test_acc"] > 0.9
    assert out["C"] == max(out["val_acc"], key=lambda c: (out["val_acc"][c], -c))
    assert (out["features"], out["classes"]) == (8, 3)
    shuffled = {**features, "test": (features["test"][0], rng.permutation(features["test"][1]))}
    again = logreg_grid(shuffled, [0.01, 0.1, 1, 10, 100])
    assert again["C"] == out["C"] and again["val_acc"] == out["val_acc"]  # test decides nothing
    assert logreg_grid(features, [0.01, 0.1, 1, 10, 100]) == out  # deterministic: no seed enters


def test_the_val_split_not_test_decides_the_logistic_probes_c():
    """Train is 70 % class 0; val holds class-1 images labelled 0, so only the most
    regularised fit (C tiny: the prior alone, always 0) scores on val; test would want the other C."""
    from glora.probe import logreg_grid

    rng = np.random.default_rng(0)
    train = _blobs(rng, 100)
    train = (np.concatenate([train[0], _blobs(rng, 80)[0][::2]]), np.concatenate([train[1], np.zeros(40, int)]))
    val = (_blobs(rng, 40)[0][1::2], np.zeros(20, int))
    out = logreg_grid({"train": train, "val": val, "test": _blobs(rng, 200)}, [1e-4, 1.0])
    assert out["val_acc"][1e-4] > out["val_acc"][1.0] and out["C"] == 1e-4


def test_tuning_over_several_seeds_chooses_the_best_mean_val_accuracy(monkeypatch, tmp_path):
    """With tune_seeds=2 every grid point trains with seeds 0 and 1 on train, and the mean
    val accuracy chooses: a lr that is best on seed 0 but diverges on seed 1 loses."""
    val = {(1e-3, 0): 0.70, (1e-3, 1): 0.70, (3e-2, 0): 0.80, (3e-2, 1): 0.20}
    calls = []

    def fake_run(name, build, cfg, task, seed, lr, splits, run_dir, **_):
        calls.append((lr, seed, splits[1], run_dir.name))
        return {"method": name, "task": task, "seed": seed, "lr": lr, "acc": val[(lr, seed)] if splits[1] == "val" else 0.5, "seconds": 0.0,
                "adapter_params": 1, "head_params": 1}

    monkeypatch.setattr(accuracy, "run_method", fake_run)
    monkeypatch.setattr(accuracy, "method_list", lambda *a, **k: {"lora_r1": None})
    setup = accuracy.Setup(tasks=["count"], run_tasks=["count"], budgets=[4096], seeds=3, methods=["lora_r1"],
                           grids={"lora_r1": [1e-3, 3e-2]}, searches=2, supernet_epochs=1, peft_glora_ranks=[], tune_seeds=2)
    cfg = types.SimpleNamespace()
    tries, rows = accuracy._trained_rows(cfg, None, "count", "lora_r1", setup, {}, tmp_path)
    assert [(r["lr"], r["seed"]) for r in tries] == [(1e-3, 0), (1e-3, 1), (3e-2, 0), (3e-2, 1)]
    assert {r["lr"] for r in rows} == {1e-3} and [r["seed"] for r in rows] == [0, 1, 2]  # seed 0 alone would pick 3e-2
    assert [c[3] for c in calls[:2]] == ["tune-lr0.001", "tune-lr0.001-seed1"]  # seed 0 keeps the one-seed run dir (resumes)
    one = accuracy._trained_rows(cfg, None, "count", "lora_r1", replace(setup, tune_seeds=1), {}, tmp_path)[1]
    assert {r["lr"] for r in one} == {3e-2}
