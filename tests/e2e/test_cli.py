"""The main job: glora-pipeline end to end (smoke), reproducible, with a plain timm export."""
import json

import pandas as pd
import pytest
from conftest import job_config, run_cli


def _pipeline(tmp_path, cache_dir, name):
    proc = run_cli("glora-pipeline", "experiment=smoke", f"paths.cache={cache_dir}", f"hydra.run.dir={tmp_path / name}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp_path / name


@pytest.mark.slow
def test_pipeline_runs_end_to_end_and_reproduces(tmp_path, cache_dir):
    first, second = _pipeline(tmp_path, cache_dir, "a"), _pipeline(tmp_path, cache_dir, "b")
    table = pd.read_csv(first / "pipeline.csv")
    assert list(table.columns[:6]) == ["task", "budget", "trainable_params", "search_val_acc", "test_acc_retrained", "test_acc_merged"]
    assert (table["test_acc_merged"] == table["test_acc_retrained"]).all()
    assert (table["trainable_params"] <= table["budget"]).all()
    assert "| task | budget |" in (first / "report.md").read_text()
    for sub in ("train-count", "search-count-20000", "retrain-count-20000"):
        assert (first / sub / "metrics.json").is_file()
    assert table.equals(pd.read_csv(second / "pipeline.csv"))  # same seed, same layout and metrics on CPU
    layout = lambda run: json.loads((run / "search-count-20000" / "layout.json").read_text())  # noqa: E731
    assert layout(first) == layout(second)


def test_front_pipeline_searches_once_and_retrains_the_front_per_budget(tmp_path, cache_dir):
    from glora.spaces import Layout
    from glora.stages.front import best_under, read_front
    from glora.stages.pipeline import run_pipeline

    cfg = job_config("pipeline", cache_dir, "search=pareto", "pipeline.budgets=[3000,1500]", "search.min_params=500")
    table = run_pipeline(cfg, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("search-*")) == ["search-count-front"]  # one search for both budgets
    search = tmp_path / "search-count-front"
    assert json.loads((search / "metrics.json").read_text())["budget"] == 3000  # the largest budget
    assert json.loads((search / "search_state.json").read_text())["identity"]["targets"] == [1500, 3000]  # aimed at the budgets
    front = read_front(search)
    assert list(table["budget"]) == [3000, 1500]
    for row in table.itertuples():
        point = best_under(front, row.budget, "pipeline.budgets")
        assert row.layout == f"search-count-front/front/{int(point['trainable_params'])}.json"
        assert row.layout_hash == point["layout_hash"] == Layout.load(tmp_path / row.layout).hash
        assert row.search_val_acc == point["val_acc"] and row.trainable_params <= row.budget
        assert json.loads((tmp_path / f"retrain-count-{row.budget}" / "metrics.json").read_text())["layout_hash"] == row.layout_hash
    assert pd.read_csv(tmp_path / "pipeline.csv")["layout"].tolist() == table["layout"].tolist()
    assert "search-count-front/front.png" in (tmp_path / "report.md").read_text()


def test_front_pipeline_budget_errors(tmp_path, cache_dir):
    from glora.run.errors import JobError
    from glora.stages.front import best_under
    from glora.stages.pipeline import run_pipeline

    cfg = job_config("pipeline", cache_dir, "search=pareto", "pipeline.budgets=[3000,400]", "search.min_params=500")
    with pytest.raises(JobError, match=r"pipeline.budgets=\[3000, 400\] has 400, below search.min_params=500: .*lower search.min_params"):
        run_pipeline(cfg, tmp_path)
    assert not any(tmp_path.iterdir())  # refused before any training
    front = pd.DataFrame({"trainable_params": [600, 900], "val_acc": [0.5, 0.7], "layout_hash": ["a", "b"], "generation": [0, 1]})
    assert best_under(front, 899, "pipeline.budgets")["layout_hash"] == "a"
    with pytest.raises(JobError, match=r"pipeline.budgets=550: no front point has that few params \(the smallest has 600\)"):
        best_under(front, 550, "pipeline.budgets")


def test_pipeline_trains_the_supernet_for_its_own_epochs(tmp_path, cache_dir):
    """pipeline.supernet_epochs lengthens the supernet alone: the re-ranking's stand-alone
    runs and the retraining keep trainer.epochs."""
    from glora.stages.pipeline import run_pipeline

    cfg = job_config("pipeline", cache_dir, "pipeline.supernet_epochs=3", "trainer.epochs=1", "pipeline.budgets=[3000]",
                     "search.generations=1", "search.rerank=1")
    run_pipeline(cfg, tmp_path)
    epochs = lambda run: len(json.loads((tmp_path / run / "train_state.json").read_text())["history"])  # noqa: E731
    assert epochs("train-count") == 3 and epochs("retrain-count-3000") == 1
    assert json.loads((tmp_path / "search-count-3000" / "rerank_state.json").read_text())["identity"]["rerank_epochs"] == 1
