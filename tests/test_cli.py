"""The main job: glora-pipeline end to end (smoke), reproducible, with a plain timm export."""
import json

import pandas as pd
import pytest

from conftest import run_cli


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
