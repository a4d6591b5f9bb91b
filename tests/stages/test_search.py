"""glora-search: legal layouts, exact resume, outputs, strategies, the front search's
front, sweeps, bad input."""
import json
import random
from dataclasses import replace

import pandas as pd
import pytest
import torch
from conftest import job_config, make_vit, run_cli

from glora.run.errors import CheckpointError, JobError
from glora.search import STRATEGIES
from glora.search.operators import Budget, BudgetError, LayoutOps
from glora.spaces import Layout, LayoutError, Space
from glora.stages.search import run_search
from glora.stages.train import load_trained


@pytest.fixture(scope="module")
def ops(smoke_supernet):
    sn = load_trained(smoke_supernet)
    return LayoutOps(Layout.sample(sn.model, sn.space, seed=0), Budget(3000, 1000))


def test_operators_only_make_legal_layouts(ops):
    rng = random.Random(0)
    pool = [ops.random(rng) for _ in range(20)]
    children = pool + [ops.mutate(p, rng, 0.5) for p in pool] + [ops.crossover(a, b, rng) for a, b in zip(pool, pool[1:])]
    for layers in children:
        assert 1000 <= ops.params(layers) <= 3000
        assert ops.params(layers) == ops.layout(layers).trainable_params  # the count the layout JSON reports
    again = random.Random(0)
    assert [ops.random(again) for _ in range(20)] == pool  # a pure function of the seed


def test_repair_fixes_any_layout(ops):
    rng = random.Random(1)
    biggest = {n: tuple(max(c, key=c.get) for c in row) for n, row in ops.costs.items()}
    assert ops.params(biggest) == ops.most > 3000
    assert ops.legal(ops.repair(biggest, rng))


def test_infeasible_budget_is_one_clear_error(ops):
    with pytest.raises(BudgetError, match=r"search.min_params=\d+ is infeasible: the largest layout of this space has \d+"):
        LayoutOps(ops.template, Budget(10**9, 10**9))
    with pytest.raises(BudgetError, match="is above search.budget"):
        LayoutOps(ops.template, Budget(10, 20))


def _search(smoke_supernet, cache_dir, run_dir, *overrides):
    return run_search(job_config("search", cache_dir, f"supernet={smoke_supernet}", "search.budget=3000", *overrides), run_dir)


def test_search_writes_its_outputs(smoke_supernet, cache_dir, tmp_path):
    metrics = _search(smoke_supernet, cache_dir, tmp_path)
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history.columns) == ["generation", "strategy", "layout_hash", "trainable_params", "val_acc", "seconds"]
    assert history["layout_hash"].is_unique  # never evaluated twice
    assert (history["trainable_params"] <= 3000).all() and sorted(history["generation"].unique()) == [0, 1, 2]
    best = Layout.load(tmp_path / "layout.json")
    assert best.budget == 3000 and best.trainable_params <= 3000
    assert best.metrics["val_acc"] == history["val_acc"].max() == metrics["best_val_acc"]
    for name in ("metrics.json", "report.md", "search_curve.png", "pareto.png", "layout_heatmap.png"):
        assert (tmp_path / name).is_file()
    assert metrics["evaluations"] == len(history)


def test_rerank_trains_the_top_layouts_and_the_lora_ones_alone_at_each_lr(cache_dir, tmp_path, monkeypatch):
    import glora.stages.rerank as stage
    from glora.stages.setup import wrapped_backbone
    from glora.stages.train import train_supernet
    from glora.supernet import set_layout
    from glora.training import fit

    smoke_supernet = tmp_path / "supernet"  # ranks (and re-ranks) on val + 100 held-out images
    train_supernet(job_config("train", cache_dir, "data.rank_images=100", "trainer.epochs=1"), smoke_supernet)
    tmp_path = tmp_path / "search"
    settings = ("search.rerank=2", "search.rerank_epochs=1", "search.rerank_lrs=[1e-3,3e-2]")
    metrics = _search(smoke_supernet, cache_dir, tmp_path, *settings)
    table = pd.DataFrame(metrics["reranked"])
    history = pd.read_csv(tmp_path / "history.csv")
    top = history.sort_values(["val_acc", "trainable_params"], ascending=[False, True], kind="stable")["layout_hash"]
    assert list(table["layout_hash"][:2]) == list(top[:2])
    sn = load_trained(smoke_supernet)
    ops = LayoutOps(Layout.sample(sn.model, sn.space, seed=0), Budget(3000))
    lora = {ops.layout(layers).hash for layers in ops.lora_layouts(random.Random(0)) if ops.legal(layers)}
    assert lora and lora <= set(table["layout_hash"])  # the LoRA layouts that fit are always weighed
    # Each candidate scores at its best lr, and the lrs do differ (else the grid is not used).
    best_of = table[["val_acc_lr0.001", "val_acc_lr0.03"]].max(axis=1)
    assert (table["standalone_val_acc"] == best_of).all()
    assert (table["standalone_lr"] == table[["val_acc_lr0.001", "val_acc_lr0.03"]].idxmax(axis=1).str[len("val_acc_lr"):].astype(float)).all()
    assert (table["val_acc_lr0.001"] != table["val_acc_lr0.03"]).any()
    winner = table.sort_values(["standalone_val_acc", "trainable_params"], ascending=[False, True], kind="stable").iloc[0]
    layout = Layout.load(tmp_path / "layout.json")
    assert layout.hash == winner["layout_hash"] == metrics["best_layout_hash"]
    assert layout.metrics["standalone_val_acc"] == winner["standalone_val_acc"] == metrics["best_standalone_val_acc"]
    assert layout.tuned_lr.lr == winner["standalone_lr"] == metrics["best_standalone_lr"]
    assert layout.tuned_lr.grid == (1e-3, 3e-2) and layout.tuned_lr.chosen  # the grid it chose from (a retrain takes its choice)
    assert layout.tuned_lr.val_acc == winner["standalone_val_acc"]
    # The stand-alone score is a real training run: the same training by hand, at the lr it
    # won at, gives the same accuracy on the ranking images (val + data.rank_images).
    cfg = sn.config
    trainer = replace(cfg.trainer, epochs=1)
    model, _, task = wrapped_backbone(replace(cfg, trainer=trainer), sn.space)
    set_layout(model, layout)
    optim = replace(cfg.optim, lr=winner["standalone_lr"])
    fit(model, task, optim, trainer, ("train", "val"), groups=optim.groups(model))
    model.eval()
    with torch.no_grad():
        hits = [(model(x).argmax(-1) == y).sum().item() for x, y in task.ranking_loader()]
    count = len(task.splits["val"]) + len(task.splits["rank"])
    assert sum(hits) / count == pytest.approx(winner["standalone_val_acc"], abs=1e-9)
    # A resumed search reads the saved scores back instead of training again; a longer grid
    # trains only the new lr.
    monkeypatch.setattr(stage, "fit", lambda *a, **k: pytest.fail("a scored layout was trained again"))
    again = _search(smoke_supernet, cache_dir, tmp_path, *settings, f"resume={tmp_path}")
    assert again["reranked"] == metrics["reranked"]
    trained = []
    monkeypatch.setattr(stage, "fit", lambda model, task, optim, *a, **k: trained.append(optim.lr))
    _search(smoke_supernet, cache_dir, tmp_path, *settings[:2], "search.rerank_lrs=[1e-3,3e-2,1e-2]", f"resume={tmp_path}")
    assert trained == [1e-2] * len(table)


def test_rerank_defaults_to_the_supernets_lr(smoke_supernet, cache_dir, tmp_path):
    metrics = _search(smoke_supernet, cache_dir, tmp_path, "search.rerank=1", "search.rerank_epochs=1")
    assert {row["standalone_lr"] for row in metrics["reranked"]} == {load_trained(smoke_supernet).config.optim.lr}
    assert "val_acc_lr0.001" not in metrics["reranked"][0]
    tuned = Layout.load(tmp_path / "layout.json").tuned_lr
    assert tuned.grid == (load_trained(smoke_supernet).config.optim.lr,) and not tuned.chosen  # one lr chose nothing


@pytest.mark.parametrize("strategy", [*sorted(STRATEGIES), "pareto aimed"])  # every registered strategy, and a front aimed at budgets
def test_resume_ends_like_an_uninterrupted_search(smoke_supernet, cache_dir, tmp_path, strategy):
    full, parts = tmp_path / "full", tmp_path / "parts"
    settings = ["search=pareto", "search.targets=[1500,3000]"] if strategy == "pareto aimed" else [f"search={strategy}"]
    strategy = strategy.split()[0]
    _search(smoke_supernet, cache_dir, full, *settings, "search.generations=3")
    _search(smoke_supernet, cache_dir, parts, *settings, "search.generations=1")
    _search(smoke_supernet, cache_dir, parts, *settings, "search.generations=3", f"resume={parts}")
    assert pd.read_csv(full / "history.csv").drop(columns="seconds").equals(pd.read_csv(parts / "history.csv").drop(columns="seconds"))
    assert json.loads((full / "layout.json").read_text()) == json.loads((parts / "layout.json").read_text())
    assert (full / "front.csv").is_file() == (strategy == "pareto") == (parts / "front.csv").is_file()
    if strategy == "pareto":
        assert pd.read_csv(full / "front.csv").equals(pd.read_csv(parts / "front.csv"))
        files = lambda run: {p.name: json.loads(p.read_text()) for p in (run / "front").iterdir()}  # noqa: E731
        assert files(full) == files(parts)


def test_front_search_writes_the_front(smoke_supernet, cache_dir, tmp_path, monkeypatch):
    import glora.stages.front as front_files
    from glora.search.pareto import hypervolume

    drawn = {}
    plot = front_files.plot_front
    monkeypatch.setattr(front_files, "plot_front", lambda *a, **k: drawn.update(plot(*a, **k)))
    metrics = _search(smoke_supernet, cache_dir, tmp_path, "search=pareto", "search.min_params=500")
    history, front = pd.read_csv(tmp_path / "history.csv"), pd.read_csv(tmp_path / "front.csv")
    assert list(front.columns) == ["trainable_params", "val_acc", "layout_hash", "generation"]
    assert front["trainable_params"].is_monotonic_increasing and front["val_acc"].is_monotonic_increasing
    assert front["trainable_params"].is_unique and front["val_acc"].is_unique  # one point per params, accuracy strictly rising
    # The front is exactly the set of (params, acc) points no evaluated layout beats on both.
    points = set(zip(history["trainable_params"], history["val_acc"]))
    undominated = {(p, a) for p, a in points if not any(q <= p and b >= a and (q, b) != (p, a) for q, b in points)}
    assert set(zip(front["trainable_params"], front["val_acc"])) == undominated
    assert (500 <= front["trainable_params"]).all() and (front["trainable_params"] <= 3000).all()
    for row in front.itertuples():
        layout = Layout.load(tmp_path / "front" / f"{row.trainable_params}.json")
        assert (layout.hash, layout.trainable_params, layout.metrics["val_acc"]) == (row.layout_hash, row.trainable_params, row.val_acc)
        assert history.set_index("layout_hash").loc[row.layout_hash, "generation"] == row.generation
    assert sorted(p.name for p in (tmp_path / "front").iterdir()) == sorted(f"{p}.json" for p in front["trainable_params"])
    best = Layout.load(tmp_path / "layout.json")  # the best under search.budget: what every downstream stage reads
    assert best.metrics["val_acc"] == front["val_acc"].max() == history["val_acc"].max() == metrics["best_val_acc"]
    assert metrics["front_size"] == len(front)
    assert metrics["hypervolume"] == pytest.approx(hypervolume(list(points), ref_params=3000)) and metrics["hypervolume"] > 0
    series = drawn["val accuracy"]  # every evaluated layout, and the front through them
    assert sorted(zip(*series["evaluated"])) == sorted(zip(history["trainable_params"], history["val_acc"]))
    assert series["front"] == (list(map(float, front["trainable_params"])), list(front["val_acc"]))
    assert series["budget"][0] == [3000.0, 3000.0] and series["min_params"][0] == [500.0, 500.0]
    assert (tmp_path / "front.png").is_file() and "![front](front.png)" in (tmp_path / "report.md").read_text()


def test_seed_layouts_enter_the_first_population(smoke_supernet, cache_dir, tmp_path):
    sn = load_trained(smoke_supernet)
    seed = Layout.uniform(sn.model, sn.space, A="vector", D="vector")
    seed.save(tmp_path / "seed.json")
    _search(smoke_supernet, cache_dir, tmp_path / "run", f"search.seed_layouts=[{tmp_path / 'seed.json'}]", "search.generations=1")
    assert seed.hash in set(pd.read_csv(tmp_path / "run" / "history.csv")["layout_hash"])


def test_bad_input(smoke_supernet, cache_dir, tmp_path):
    with pytest.raises(BudgetError, match="infeasible"):
        _search(smoke_supernet, cache_dir, tmp_path / "a", "search.min_params=1e9", "search.budget=2e9")
    with pytest.raises(CheckpointError, match="is not a glora-train run dir"):
        run_search(job_config("search", cache_dir, f"supernet={tmp_path / 'none'}"), tmp_path / "b")
    with pytest.raises(JobError, match="supernet is not set"):
        run_search(job_config("search", cache_dir), tmp_path / "c")
    with pytest.raises(CheckpointError, match=r"was trained with space ranks \[8, 4, 2, 1\], but search.space='small'"):
        _search(smoke_supernet, cache_dir, tmp_path / "d", "search.space=small")
    other = Layout.sample(make_vit(depth=3), Space.preset("large"), seed=0)
    other.save(tmp_path / "other.json")
    with pytest.raises(LayoutError, match=r"search.seed_layouts: .*layout has layer .blocks.2.attn.qkv. that this model does not target"):
        _search(smoke_supernet, cache_dir, tmp_path / "e", f"search.seed_layouts=[{tmp_path / 'other.json'}]")
    _search(smoke_supernet, cache_dir, tmp_path / "f", "search.generations=1")
    with pytest.raises(CheckpointError, match="belongs to another search"):
        _search(smoke_supernet, cache_dir, tmp_path / "f", "search.budget=2000", f"resume={tmp_path / 'f'}")


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]], ids=["basic", "joblib"])
def test_budget_sweep_and_report(smoke_supernet, cache_dir, tmp_path, launcher):
    """A bad point among good ones: the good ones run, the sweep exits 1 naming it, the report lists it."""
    proc = run_cli("glora-search", "--multirun", *launcher, "experiment=smoke", f"paths.cache={cache_dir}", f"paths.runs={tmp_path}",
                   f"supernet={smoke_supernet}", "search.budget=2e3,-5,4e3", "search.generations=1", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "1 sweep point(s) failed" in out and "1: search.budget=-5.0 cannot work" in out, out[-3000:]
    assert "Traceback" not in out
    (sweep,) = (tmp_path / "search" / "multirun").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if (p / "layout.json").is_file()) == ["0", "2"]  # one run dir per good budget
    proc = run_cli("glora-sweep-report", str(sweep), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(sweep / "sweep.csv")
    assert list(table["budget"]) == [2000, 4000] and (table["best_trainable_params"] <= table["budget"]).all()
    assert (sweep / "sweep.png").is_file()
    report = (sweep / "sweep.md").read_text()
    assert "## Points without a result" in report and "search.budget=-5" in report and "cannot work" in report


def test_sweep_report_draws_a_per_budget_sweep_and_a_front_together(smoke_supernet, cache_dir, tmp_path, monkeypatch, caplog):
    import glora.stages.sweep_report as sweep_report
    from glora.jobs.sweep_report import main

    sweep, front_run = tmp_path / "sweep", tmp_path / "front-run"
    for n, budget in enumerate((2000, 3000)):
        _search(smoke_supernet, cache_dir, sweep / str(n), f"search.budget={budget}", "search.generations=2")
    _search(smoke_supernet, cache_dir, front_run, "search=pareto", "search.min_params=500", "search.generations=2")
    drawn = {}
    plot = sweep_report.plot
    monkeypatch.setattr(sweep_report, "plot", lambda *a, **k: drawn.update(plot(*a, **k)))
    main([str(sweep), "--front", str(front_run)])
    series, table, front = drawn["best val accuracy"], pd.read_csv(sweep / "sweep.csv"), pd.read_csv(front_run / "front.csv")
    assert series["evolution"] == ([2000.0, 3000.0], list(table["best_val_acc"]))  # the per-budget sweep ...
    assert series["front (front-run)"] == (list(map(float, front["trainable_params"])), list(front["val_acc"]))  # ... and the front
    assert "## front (front-run)" in (sweep / "sweep.md").read_text() and (sweep / "sweep.png").is_file()
    with pytest.raises(SystemExit):  # a run dir without a front: one clear error, exit 1
        main([str(sweep), "--front", str(sweep / "0")])
    assert "holds no front.csv; point at a finished front search (glora-search search=pareto)" in caplog.text
