"""glora-evaluate: a finished model scored without training, from a run dir, an exported
model.safetensors or an adapter on its backbone, on its own task and on shifted or other
targets; each figure checked against a direct computation."""
import json

import pytest
import torch
from conftest import job_config, run_cli

from glora.run.errors import ConfigError, JobError
from glora.spaces import Layout
from glora.stages.evaluate import calibration_error, plot_confusion, run_evaluate, score
from glora.stages.retrain import retrain_merge_export
from glora.stages.setup import space_for, wrapped_backbone


@pytest.fixture(scope="module")
def retrained(cache_dir, tmp_path_factory):
    """A glora-retrain run dir of a sampled layout (1 epoch): its metrics are the reference."""
    folder = tmp_path_factory.mktemp("evaluate-retrain")
    train_cfg = job_config("train", cache_dir)
    space = space_for(train_cfg.space, train_cfg.model.name)
    model, _, _ = wrapped_backbone(train_cfg, space)
    Layout.sample(model, space, seed=3).save(folder / "layout.json")
    run = folder / "run"
    metrics = retrain_merge_export(job_config("retrain", cache_dir, f"layout={folder / 'layout.json'}", "trainer.epochs=1"), run)
    return run, metrics


def _evaluate(cache_dir, out, *overrides):
    return run_evaluate(job_config("evaluate", cache_dir, *overrides), out)


def test_a_run_dir_its_weights_and_its_adapter_score_what_the_retraining_reported(retrained, cache_dir, tmp_path):
    run, metrics = retrained
    by_dir = _evaluate(cache_dir, tmp_path / "a", f"evaluate.run={run}")
    by_file = _evaluate(cache_dir, tmp_path / "b", f"evaluate.run={run / 'model.safetensors'}")
    by_adapter = _evaluate(cache_dir, tmp_path / "c", f"evaluate.adapter={run / 'adapter.safetensors'}")
    assert by_dir["acc"].item() == by_file["acc"].item() == pytest.approx(metrics["test_acc"], abs=1e-9)  # merged, plain timm
    assert by_adapter["acc"].item() == pytest.approx(metrics["test_acc_unmerged"], abs=1e-9)  # the adapter on its backbone
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())["rows"][0]
    confusion = torch.tensor(saved["confusion"])
    assert confusion.sum() == saved["images"] and confusion.trace() / confusion.sum() == pytest.approx(saved["acc"])
    assert saved["per_class_acc"] == [pytest.approx(float(confusion[c, c] / confusion[c].sum())) for c in range(len(confusion))]
    assert (tmp_path / "a" / saved["plot"]).is_file() and "| count |" in (tmp_path / "a" / "report.md").read_text()


def test_shifted_targets_and_a_target_of_other_classes(retrained, cache_dir, tmp_path):
    run, _ = retrained
    table = _evaluate(cache_dir, tmp_path / "t", f"evaluate.run={run}", "evaluate.targets=[count,count@inversion:5,{task: count, shift: 'blur:2'}]")
    assert list(table["target"]) == ["count", "count-inversion5", "count-blur2"]
    assert table["nll"].nunique() == 3 and (table["images"] == table["images"][0]).all()
    with pytest.raises(JobError, match=r"evaluate.targets\[0\] \(orientation\) has 8 classes, but model run predicts 6"):
        _evaluate(cache_dir, tmp_path / "o", f"evaluate.run={run}", "evaluate.targets=[orientation]")
    with pytest.raises(ConfigError, match=r"evaluate.targets\[1\].colour cannot work: not a data field"):
        _evaluate(cache_dir, tmp_path / "x", f"evaluate.run={run}", "evaluate.targets=[count,{colour: red}]")
    with pytest.raises(ConfigError, match=r"evaluate.targets\[0\]: data.shift='fog' cannot work"):
        _evaluate(cache_dir, tmp_path / "y", f"evaluate.run={run}", "evaluate.targets=[count@fog]")
    with pytest.raises(JobError, match=r"^data \(data.task=orientation\) has 8 classes, but model run predicts 6"):
        _evaluate(cache_dir, tmp_path / "d", f"evaluate.run={run}", "data.task=orientation")
    with pytest.raises(JobError, match=r"adapter.safetensors is a GLoRA adapter, not a model: score it with evaluate.adapter="):
        _evaluate(cache_dir, tmp_path / "w", f"evaluate.run={run / 'adapter.safetensors'}")
    with pytest.raises(JobError, match="holds no model.safetensors"):
        _evaluate(cache_dir, tmp_path / "z", f"evaluate.run={tmp_path}")


def test_the_cli_scores_and_refuses_a_missing_model_in_one_line(retrained, cache_dir, tmp_path):
    run, metrics = retrained
    proc = run_cli("glora-evaluate", "experiment=smoke", f"paths.cache={cache_dir}", f"evaluate.run={run}", f"hydra.run.dir={tmp_path / 'ok'}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "ok" / "metrics.json").read_text())["rows"][0]["acc"] == pytest.approx(metrics["test_acc"])
    assert (tmp_path / "ok" / "job.yaml").is_file()
    proc = run_cli("glora-evaluate", "experiment=smoke", f"paths.cache={cache_dir}", f"hydra.run.dir={tmp_path / 'none'}", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out and "evaluate.run is not set" in out


def test_calibration_error_and_the_confusion_plot_against_direct_computations(tmp_path):
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = torch.tensor([0, 1, 1, 0])
    # bins of width 0.5: (0.5, 1] holds all four: confidence mean (0.9 + 0.8 + 0.7 + 0.55) / 4, accuracy 2 / 4
    assert calibration_error(probs, labels, 2) == pytest.approx(abs(0.5 - 2.95 / 4))
    # bins of width 0.1: each image alone in its bin (0.9, 0.8, 0.7, 0.55): |correct - confidence| averaged
    assert calibration_error(probs, labels, 10) == pytest.approx((0.1 + 0.8 + 0.3 + 0.55) / 4)
    result = score(probs.log(), labels, 2, 10)
    assert result["confusion"] == [[1, 1], [1, 1]] and result["acc"] == 0.5 and result["per_class_acc"] == [0.5, 0.5]
    assert result["nll"] == pytest.approx(-sum(probs[i, labels[i]].log().item() for i in range(4)) / 4)
    drawn = plot_confusion([[5, 0], [2, 3]], tmp_path / "c.png", "t")
    assert drawn["matrix"] == [[5, 0], [2, 3]] and drawn["texts"] == ["5", "0", "2", "3"] and (tmp_path / "c.png").is_file()


def test_max_images_scores_the_same_seeded_subset_for_every_target():
    """evaluate.max_images: a quicker look on a fixed subset of each target's test split."""
    import torch
    from torch.utils.data import TensorDataset

    from glora.data import DataConfig, TaskData
    from glora.run.errors import ConfigError
    from glora.stages.evaluate import EvaluateConfig, _test_subset

    test = TensorDataset(torch.arange(50).float(), torch.zeros(50, dtype=torch.long))
    task = TaskData("t", 2, {"test": test}, DataConfig())
    one, two = _test_subset(task, 10), _test_subset(task, 10)
    assert len(one.splits["test"]) == 10 and list(one.splits["test"].indices) == list(two.splits["test"].indices)
    assert list(one.splits["test"].indices) != list(range(10)) and _test_subset(task, None) is task and _test_subset(task, 80) is task
    with pytest.raises(ConfigError, match="evaluate.max_images=0"):
        EvaluateConfig(run="x", max_images=0)
