"""benchmarks/ranking.py: its statistics against direct computations, its layouts inside
the band and of the families it names, and one smoke run of the whole benchmark (tiny
backbone, one epoch) so a change that breaks it fails here."""
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import ranking  # noqa: E402
import ranking_stats  # noqa: E402
from conftest import make_vit  # noqa: E402

from glora.spaces import TENSORS, Space  # noqa: E402
from glora.supernet import wrap  # noqa: E402


def _naive_tau(x, y) -> float:
    """Kendall τ-a by counting pairs (no ties in the data it is used on)."""
    pairs = list(itertools.combinations(range(len(x)), 2))
    return sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs) / len(pairs)


def test_tau_and_regret_match_direct_counts():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=12), rng.normal(size=12)
    assert ranking_stats.kendall(x, y) == pytest.approx(_naive_tau(x, y))
    truth = np.array([0.5, 0.9, 0.7, 0.6])
    assert ranking_stats.top1_regret(np.array([3, 1, 2, 0]), truth) == pytest.approx(0.4)  # favourite scores 0.5, best 0.9
    assert ranking_stats.top1_regret(np.array([1, 1, 0, 0]), truth) == pytest.approx(0.9 - 0.7)  # a tie: the mean of the tied


def test_permutation_p_is_small_for_agreement_and_large_for_noise():
    truth = np.arange(16, dtype=float)
    agree = truth + np.random.default_rng(1).normal(0, 1, 16)
    tau = ranking_stats.kendall(agree, truth)
    assert ranking_stats.permutation_p(agree, truth, tau, rounds=500) < 0.01
    noise = np.random.default_rng(2).permutation(truth)
    assert ranking_stats.permutation_p(noise, truth, ranking_stats.kendall(noise, truth), rounds=500) > 0.05
    exact = np.mean([_naive_tau(np.array(p), truth[:5]) >= _naive_tau(np.array([0, 2, 1, 3, 4.0]), truth[:5]) - 1e-12
                     for p in itertools.permutations([0, 2, 1, 3, 4.0])])  # the exact one-sided p over all 120 orders
    assert ranking_stats.permutation_p(np.array([0, 2, 1, 3, 4.0]), truth[:5], 0.8, rounds=4000) == pytest.approx(exact, abs=0.02)


def test_bootstrap_interval_brackets_tau_and_narrows_with_more_layouts():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=60)
    scores = truth + rng.normal(0, 1, 60)
    low, high = ranking_stats.bootstrap_interval(scores, truth, rounds=500)
    few_low, few_high = ranking_stats.bootstrap_interval(scores[:12], truth[:12], rounds=500)
    assert low < ranking_stats.kendall(scores, truth) < high
    assert high - low < few_high - few_low


def test_split_half_reads_the_two_halves_of_the_seeds():
    base = np.arange(8, dtype=float)[:, None]
    same = np.hstack([base, base, base, base])
    assert ranking_stats.split_half(same) == pytest.approx(1.0)
    flipped = np.hstack([base, base, -base, -base])
    assert ranking_stats.split_half(flipped) == pytest.approx(-1.0)


def test_structured_layouts_lie_in_the_band_and_keep_their_familys_forms():
    model = wrap(make_vit(), Space(ranks=(4, 2, 1)))
    budget = 3072  # LoRA_2 on every qkv / proj / fc1 / fc2 of the tiny ViT
    picked, notes = ranking.structured_layouts(model, Space(ranks=(4, 2, 1)), budget, seed=0)
    lo, hi = ranking.band(budget)
    assert len(picked) >= ranking.STRUCTURED - 1 and len({layout.hash for _, layout in picked}) == len(picked)
    assert all(lo <= layout.trainable_params <= hi for _, layout in picked)
    kinds = {kind for kind, _ in picked}
    assert "LoRA layout" in kinds and "A/D only" in kinds
    for kind, layout in picked:
        allowed = dict((name, options) for name, _, options in ranking.FAMILIES).get(kind)
        for choice in layout.layers.values():
            if kind == "LoRA layout":
                assert [str(o) for o in choice] == ["none", "LoRA_2", "none", "none", "none"]
            elif allowed:
                for tensor, option in zip(TENSORS, choice):
                    assert option.kind in allowed.get(tensor, ("lora", "vector", "constant", "none")), (kind, tensor)
    assert isinstance(notes, list)


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end_and_reports(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr(ranking, "ROOT", tmp_path)
    monkeypatch.setattr(ranking, "FAMILIES", ranking.FAMILIES[:1])  # a smaller cell: the LoRA layout, 1 A/D only, randoms, picks
    monkeypatch.setattr(ranking, "STRUCTURED", 5)
    monkeypatch.setattr(ranking, "SEARCH_TOP", 2)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    args = ["--cells", "count@3072", "--name", "smoke", "--supernets", "uniform", "budget", "--supernet-epochs", "1", "--epochs", "1",
            "--lrs", "1e-3", "1e-2", "--seeds", "2", "--rounds", "50", "--work", str(tmp_path / "work"),
            "experiment=smoke", f"paths.cache={cache_dir}", "trainer.max_steps=3"]
    ranking.main(args)
    table = pd.read_csv(tmp_path / "benchmarks" / "results" / "ranking-smoke.csv", dtype={"hash": str})
    assert len(table) >= 6 and table["params"].between(*ranking.band(3072)).all()
    assert {"uniform_acc", "uniform_loss", "budget_acc", "budget_loss"} <= set(table.columns)
    assert (table[["seed0", "seed1"]].mean(axis=1) - table["truth"]).abs().max() < 1e-3  # the truth is the seeds' mean
    text = (tmp_path / "benchmarks" / "results" / "ranking-smoke.md").read_text()
    assert "parameter count" in text and "budget: val loss" in text and "split_half_tau" in text
    saved = json.loads((tmp_path / "work" / "smoke" / "count@3072" / "layouts.json").read_text())
    assert any(row["kind"].startswith("search pick") for row in saved["layouts"])
    ranking.main(args)  # a second call reads everything back: no run starts again
    assert pd.read_csv(tmp_path / "benchmarks" / "results" / "ranking-smoke.csv", dtype={"hash": str}).equals(table)
