"""Paired statistics for the accuracy tables (DESIGN.md §10): searched GLoRA against the
best member of each rival family, paired over (task, seed), with a paired t-test and a
Wilcoxon signed-rank test. A win is p < 0.05 with a positive mean difference, a loss the
same with a negative one; anything else is a tie and is called one."""
from __future__ import annotations

import math
import re

import pandas as pd
from scipy import stats as sps

__all__ = ["ALPHA", "RIVAL_FAMILIES", "WILCOXON_MIN_PAIRS", "paired_tests", "searched_members"]

ALPHA = 0.05
WILCOXON_MIN_PAIRS = 6  # below this the signed-rank test cannot reach p < 0.05 (two-sided, n=5: p >= 0.0625)
# (family, pattern of its members' names; {b}: the budget); a member competes when its adapter fits the budget
RIVAL_FAMILIES = (
    ("PEFT LoRA", r"lora_r\d+(_alpha_r)?"),
    ("GLoRA LoRA layout", r"glora_lora_r\d+"),
    ("random layout", r"glora_random_{b}"),
    ("PEFT GLoRA uniform", r"peft_glora_r\d+"),
)


def searched_members(methods, budget: int) -> list[str]:
    """The searched layouts of ``budget``: its independent searches (``glora_search_<b>_s<k>``),
    or the flag interface's single search (``glora_search_<b>``)."""
    independent = sorted((m for m in methods if re.fullmatch(rf"glora_search_{budget}_s\d+", m)), key=lambda m: int(m.rsplit("_s", 1)[1]))
    return independent or [m for m in methods if m == f"glora_search_{budget}"]


def paired_tests(runs: pd.DataFrame, budgets, alpha: float = ALPHA) -> pd.DataFrame:
    """Per budget and rival family: searched GLoRA (per (task, seed), the mean over its
    searches) against the family's best member that fits the budget (best by mean test
    accuracy: picked on test, which favours the rival). Columns: the mean paired difference
    (searched - rival), its std over pairs, the paired t-test p (``scipy.stats.ttest_rel``),
    the Wilcoxon signed-rank p (with >= 6 pairs not all zero, else NaN) and the verdict, from
    the t-test: ``win`` / ``loss`` when p < ``alpha``, else ``tie``."""
    acc = runs.pivot_table(index=["task", "seed"], columns="method", values="acc", aggfunc="mean")
    params = runs.groupby("method")["adapter_params"].mean()
    overall = acc.mean()  # mean over tasks and seeds
    rows = []
    for budget in budgets:
        ours = searched_members(acc.columns, budget)
        if not ours:
            continue
        searched = acc[ours].mean(axis=1, skipna=False)  # a (task, seed) pair needs every search
        for family, pattern in RIVAL_FAMILIES:
            members = [m for m in acc.columns if re.fullmatch(pattern.format(b=budget), m) and params[m] <= budget]
            if not members:
                continue
            best = max(members, key=lambda m: (overall[m], -params[m]))
            pairs = pd.concat([searched.rename("ours"), acc[best].rename("rival")], axis=1).dropna()
            diff = pairs["ours"] - pairs["rival"]
            n = len(diff)
            t_p = _pvalue(sps.ttest_rel(pairs["ours"], pairs["rival"])) if n >= 2 else math.nan
            w_p = _pvalue(sps.wilcoxon(diff)) if n >= WILCOXON_MIN_PAIRS and (diff != 0).any() else math.nan
            mean = diff.mean() if n else math.nan
            rows.append({
                "budget": budget, "searched": f"glora_search_{budget}" + (f" (mean of {len(ours)} searches)" if len(ours) > 1 else ""),
                "searched_params": int(round(params[ours].mean())), "searched_acc": round(searched.mean(), 4),
                "rival_family": family, "best_rival": best, "rival_params": int(round(params[best])), "rival_acc": round(overall[best], 4),
                "pairs": n, "difference": round(mean, 4), "paired_std": round(diff.std(ddof=1), 4) if n >= 2 else math.nan,
                "t_p": t_p, "wilcoxon_p": w_p, "verdict": _verdict(mean, t_p, alpha),
            })
    return pd.DataFrame(rows)


def _pvalue(result) -> float:
    p = float(result.pvalue)
    return p if math.isfinite(p) else math.nan


def _verdict(mean: float, p: float, alpha: float) -> str:
    if math.isnan(p) or p >= alpha:
        return "tie"
    return "win" if mean > 0 else "loss" if mean < 0 else "tie"
