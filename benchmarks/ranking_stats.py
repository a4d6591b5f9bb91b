"""Rank agreement with honest uncertainty: Kendall τ and Spearman ρ, a one-sided
permutation p-value (is the agreement more than chance?), a bootstrap interval over the
layouts (how much would another set of layouts move it?), top-1 regret, and split-half
reliability of a noisy ground truth (no ranker can be judged beyond it)."""
from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["agreement", "kendall", "permutation_p", "bootstrap_interval", "top1_regret", "split_half"]


def kendall(x, y) -> float:
    """Kendall τ-b (ties counted as ties); 0 where one side is constant."""
    tau = stats.kendalltau(x, y).statistic
    return 0.0 if np.isnan(tau) else float(tau)


def spearman(x, y) -> float:
    rho = stats.spearmanr(x, y).statistic
    return 0.0 if np.isnan(rho) else float(rho)


def permutation_p(x, y, observed: float, rounds: int = 2000, seed: int = 0) -> float:
    """One-sided p of τ ≥ ``observed`` when the ranker's scores are shuffled over the
    layouts: (1 + hits) / (1 + rounds), so it is never 0."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x, float), np.asarray(y, float)
    hits = sum(kendall(rng.permutation(x), y) >= observed - 1e-12 for _ in range(rounds))
    return (1 + hits) / (1 + rounds)


def bootstrap_interval(x, y, rounds: int = 2000, level: float = 0.9, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of τ over layouts resampled with replacement."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x, float), np.asarray(y, float)
    draws = [kendall(x[idx], y[idx]) for idx in (rng.integers(0, len(x), len(x)) for _ in range(rounds))]
    tail = (1 - level) / 2 * 100
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


def top1_regret(scores, truth) -> float:
    """Best ground truth minus the ground truth of the ranker's favourite (a tie for first
    place counts the mean of the tied layouts: a ranker gets no credit for a lucky pick)."""
    scores, truth = np.asarray(scores, float), np.asarray(truth, float)
    first = np.isclose(scores, scores.max(), rtol=0, atol=1e-12)
    return float(truth.max() - truth[first].mean())


def agreement(scores, truth, rounds: int = 2000, seed: int = 0) -> dict[str, float]:
    """Every figure the ranking table shows for one ranker against the ground truth."""
    tau = kendall(scores, truth)
    low, high = bootstrap_interval(scores, truth, rounds, seed=seed)
    return {"tau": tau, "tau_p": permutation_p(scores, truth, tau, rounds, seed), "tau_low": low, "tau_high": high,
            "rho": spearman(scores, truth), "regret": top1_regret(scores, truth)}


def split_half(per_seed: np.ndarray) -> float:
    """τ between the layouts' mean over the first half of their seeds and over the second
    (``per_seed``: layouts × seeds): how well the ground truth agrees with itself."""
    half = per_seed.shape[1] // 2
    return kendall(per_seed[:, :half].mean(1), per_seed[:, half:2 * half].mean(1))
