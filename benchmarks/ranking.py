#!/usr/bin/env python
"""Does the supernet rank layouts of the same size? Per cell (a task at a budget), ≥ 16
layouts within ±5 % of the budget that differ in structure — GLoRA's own LoRA layout,
A / D only, vector / constant only, with and without C and E, random draws, and the
searches' picks — each scored by every ranker and trained alone for the ground truth:

* **ground truth**: stand-alone training from the backbone on train (800), the lr chosen
  per layout on val (200) from ``--lrs`` with seed 0 (each of those runs also scored on
  test), then the other seeds of ``--seeds`` at that lr scored on test (which neither the search nor the lr choice sees); the mean over seeds.
  Its seed noise, its spread across layouts and its split-half reliability (τ between the
  means of the two halves of the seeds) say whether there is anything to rank.
* **rankers**: parameter count, and for each supernet recipe (``--supernets``: uniform
  per-layer draws, the budget band, the sandwich rule, with in-place distillation) the
  inherited accuracy and the inherited loss on val — the 1,000 labels of a VTAB-1k task
  (train 800 for the supernet, val 200 for ranking) and nothing more.
* **per ranker**: Kendall τ and Spearman ρ with the ground truth, a one-sided
  permutation p-value, a bootstrap 90 % interval over the layouts, and top-1 regret (the
  best layout's ground truth minus that of the ranker's favourite); per recipe, the
  regret of its own search's pick (an evolution inside the band).

Every stage resumes (finished supernets, scores and stand-alone runs are read back), so
the benchmark can be stopped and restarted; ``--report`` writes the tables from what is
finished and names what is not.

    .venv/bin/python benchmarks/ranking.py --cells count@4096 --name cpu-eq      # one process per cell, then:
    .venv/bin/python benchmarks/ranking.py --cells count@4096 orientation@4096 --name cpu-eq --report
    .venv/bin/python benchmarks/ranking.py --cells mnist@73728 --name real-eq experiment=real_cpu --epochs 3 --lrs 3e-4 1e-3 3e-3

Writes benchmarks/results/ranking-<name>.{md,csv,png}.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from accuracy import glora_layout, run_method
from machine import machine_info
from ranking_stats import agreement, split_half

from glora.jobs.app import CONF_DIR
from glora.run.device import pick_device
from glora.run.io import write_json_atomic, write_text_atomic
from glora.search import Budget, BudgetError, Evaluator, Evolution, LayoutOps, run_generations, timed, top_k
from glora.search.report import markdown_table
from glora.spaces import Layout, Space
from glora.stages.train import load_trained, train_supernet
from glora.training import predict

log = logging.getLogger("ranking")

BAND = 0.05  # a cell's layouts have trainable params within ±5 % of its budget

#: Supernet recipes: Hydra overrides of glora-train ({hi}: the band's top, {band}: its width
#: as a fraction of the top), so the budget-aware ones train exactly the cell's band.
SUPERNETS = {
    "uniform": [],
    "budget": ["sampling.rule=budget", "sampling.budgets=[{hi}]", "sampling.band={band}"],
    "sandwich": ["sampling.rule=sandwich"],
    "sandwich-budget": ["sampling.rule=sandwich", "sampling.budgets=[{hi}]", "sampling.band={band}"],
    "distill": ["sampling.rule=sandwich", "sampling.budgets=[{hi}]", "sampling.band={band}", "sampling.randoms=1", "sampling.distill=true"],
}

#: Layout families: (name, how many, the options each support tensor may take).
FAMILIES = [
    ("A/D only", 3, {"B": ("none",), "C": ("none",), "E": ("none",)}),  # the multiplicative paths W0⊙A, b0⊙D alone
    ("vector/constant only", 2, {"A": ("vector", "constant", "none"), "B": ("vector", "constant", "none"), "C": ("vector", "none"),
                                 "D": ("vector", "constant", "none"), "E": ("vector", "constant", "none")}),
    ("with C and E", 2, {"C": ("lora", "vector"), "E": ("vector",)}),
    ("without C and E", 2, {"C": ("none",), "E": ("none",)}),
]
STRUCTURED = 12  # the LoRA layout + families + uniform random draws in the band, before the searches' picks
SEARCH_TOP = 3  # the uniform supernet's top layouts; every other recipe adds its first


def parse_cell(text: str) -> tuple[str, int]:
    task, _, budget = text.partition("@")
    if not task or not budget.isdigit():
        raise SystemExit(f"--cells: {text!r} is not <task>@<budget>, e.g. count@4096")
    return task, int(budget)


def band(budget: int) -> tuple[int, int]:
    return int(round(budget * (1 - BAND))), int(round(budget * (1 + BAND)))


# ---- the layouts ----------------------------------------------------------------------------
def structured_layouts(model, space: Space, budget: int, seed: int) -> tuple[list[tuple[str, Layout]], list[str]]:
    """The cell's layouts that do not depend on a supernet, and notes on families that
    cannot reach the band."""
    lo, hi = band(budget)
    rng = random.Random(seed)
    full = LayoutOps(Layout.sample(model, space, seed=0), Budget(hi, lo))
    picked, notes = [], []
    lora = [layers for layers in full.lora_layouts(rng) if full.legal(layers)]
    picked.append(("LoRA layout", full.layout(lora[0] if lora else full.lora_layouts(rng)[0])))
    for name, count, options in FAMILIES:
        try:
            ops = LayoutOps(Layout.sample(model, Space(ranks=space.ranks, targets=space.targets, options=options), seed=0), Budget(hi, lo))
        except BudgetError:
            notes.append(f"{name}: none of its layouts is in the band (its smallest is above it or its largest below)")
            continue
        picked += [(name, full.layout(ops.random(rng))) for _ in range(count)]
    while len(picked) < STRUCTURED:
        picked.append(("random", full.layout(full.random(rng))))
    return _unique(picked), notes


def _unique(picked: list[tuple[str, Layout]]) -> list[tuple[str, Layout]]:
    seen, out = set(), []
    for kind, layout in picked:
        if layout.hash not in seen:
            seen.add(layout.hash)
            out.append((kind, layout))
    return out


def search_picks(evaluate: Evaluator, template: Layout, budget: int, top: int, seed: int) -> list[Layout]:
    """The best ``top`` layouts of an evolution inside the band (20 × 8, the pipeline's)."""
    lo, hi = band(budget)
    ops = LayoutOps(template, Budget(hi, lo))
    records = run_generations(Evolution(population=20, generations=8, budget=hi, min_params=lo, seed=seed), ops, timed(evaluate),
                              show_progress=False)
    return [ops.layout(r.layers) for r in top_k(records, top)]


# ---- one cell -------------------------------------------------------------------------------
def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return OmegaConf.to_object(compose("train", overrides=overrides))


def run_cell(task: str, budget: int, args: argparse.Namespace, cell_dir: Path) -> None:
    """Per recipe: its supernet, its search's picks (added to the cell's layouts) and the
    ground truth of every layout not yet trained; then every recipe scores every layout.
    The first recipe's layouts get their truth before the next supernet trains, so a cut
    run still answers for the recipes it reached."""
    lo, hi = band(budget)
    base = compose_train([*args.overrides, f"data.task={task}", *([f"trainer.epochs={args.epochs}"] if args.epochs else [])])
    layouts_file, scores_file = cell_dir / "layouts.json", cell_dir / "scores.csv"
    saved = json.loads(layouts_file.read_text()) if layouts_file.is_file() else {"layouts": [], "notes": []}
    scores = pd.read_csv(scores_file, dtype={"hash": str}).to_dict("records") if scores_file.is_file() else []
    pool: dict[str, tuple[str, Layout]] = {}
    for row in saved["layouts"]:
        pool[row["hash"]] = (row["kind"], Layout.load(cell_dir / "layouts" / f"{row['hash']}.json"))

    def keep(kind: str, layout: Layout) -> None:
        if layout.hash not in pool:
            layout.save(cell_dir / "layouts" / f"{layout.hash}.json")
            pool[layout.hash] = (kind, layout)
            saved["layouts"].append({"hash": layout.hash, "kind": kind, "params": layout.trainable_params})
        write_json_atomic(layouts_file, saved)

    def supernet(recipe: str):
        extra = [o.format(hi=hi, band=round(1 - lo / hi, 6)) for o in SUPERNETS[recipe]]
        cfg = compose_train([*args.overrides, f"data.task={task}", *extra])
        banded = any("{hi}" in o for o in SUPERNETS[recipe])  # trained for this cell's band, else shared by the task's cells
        run = cell_dir / f"supernet-{recipe}" if banded else cell_dir.parent / task / f"supernet-{recipe}"
        tick = time.time()
        train_supernet(replace(cfg, trainer=replace(cfg.trainer, epochs=args.supernet_epochs)), run)
        log.info("%s@%d %s supernet ready (%.0f s)", task, budget, recipe, time.time() - tick)
        device = pick_device(cfg.trainer.device)
        sn = load_trained(run, device)
        return sn, Evaluator(sn.model, sn.task.ranking_loader(), device, predict)

    for recipe in args.supernets:  # the layouts (structured ones once, then each recipe's search picks) and their truth
        sn, evaluate = supernet(recipe)
        if not pool:
            structured, saved["notes"] = structured_layouts(sn.model, sn.space, budget, args.seed)
            for kind, layout in structured:
                keep(kind, layout)
        if not any(s["recipe"] == recipe and s["kind"] == "pick" for s in scores):
            template = Layout.sample(sn.model, sn.space, seed=0)
            for rank, layout in enumerate(search_picks(evaluate, template, budget, SEARCH_TOP if recipe == "uniform" else 1, args.seed)):
                keep(f"search pick ({recipe})", layout)
                scores.append({"recipe": recipe, "hash": layout.hash, "kind": "pick", "rank": rank})
            write_text_atomic(scores_file, pd.DataFrame(scores).to_csv(index=False))
        del sn, evaluate
        for index, (layout_hash, (kind, layout)) in enumerate(pool.items()):  # finished runs are read back
            truth = ground_truth(layout, base, task, args, cell_dir / "standalone" / layout_hash)
            log.info("%s@%d [%d/%d] %s %s (%d params): test %.4f (lr %g)", task, budget, index + 1, len(pool), kind, layout_hash,
                     layout.trainable_params, truth["test"], truth["lr"])
    for recipe in args.supernets:  # every recipe scores every layout, the other recipes' picks included
        done = {s["hash"] for s in scores if s["recipe"] == recipe and s["kind"] == "score"}
        if set(pool) - done:
            _, evaluate = supernet(recipe)
            for layout_hash, (_, layout) in pool.items():
                if layout_hash not in done:
                    got = evaluate.scores(layout)
                    scores.append({"recipe": recipe, "hash": layout_hash, "kind": "score", "acc": got["acc"], "loss": got["loss"],
                                   "images": evaluate.count})
            write_text_atomic(scores_file, pd.DataFrame(scores).to_csv(index=False))


def ground_truth(layout: Layout, cfg, task: str, args: argparse.Namespace, run_dir: Path) -> dict:
    """lr chosen on val (seed 0, train -> val, also scored on test), then the other seeds
    at that lr scored on test; each run evaluates once, after its last epoch."""
    path = run_dir / "layout.json"
    if not path.is_file():
        layout.save(path)
    cfg = replace(cfg, trainer=replace(cfg.trainer, eval_every=cfg.trainer.epochs))
    build = lambda seed: glora_layout(lambda _m: Layout.load(path), seed, cfg.glora)  # noqa: E731
    for lr in args.lrs:
        run_method("layout", build(0), cfg, task, 0, lr, ("train", "val"), run_dir / f"tune-lr{lr:g}", also=("test",))
    lr = read_truth(run_dir, args.lrs, 0)["lr"]
    for seed in range(1, args.seeds):
        run_method("layout", build(seed), cfg, task, seed, lr, ("train", "test"), run_dir / f"lr{lr:g}" / f"seed{seed}")
    return read_truth(run_dir, args.lrs, args.seeds)


# ---- the report -----------------------------------------------------------------------------
def read_truth(run_dir: Path, lrs: list[float], seeds: int) -> dict | None:
    """A layout's ground truth from its finished runs (None while one is missing): the lr
    with the best val accuracy (ties: the smaller), and the test accuracy of seed 0 (its
    tuning run) and of seeds 1.. at that lr."""
    tries = {}
    for lr in lrs:
        done = run_dir / f"tune-lr{lr:g}" / "result.json"
        if not done.is_file():
            return None
        tries[lr] = json.loads(done.read_text())
    lr = max(lrs, key=lambda x: (tries[x]["acc"], -x))
    tests = [tries[lr]["test_acc"]]
    for seed in range(1, seeds):
        done = run_dir / f"lr{lr:g}" / f"seed{seed}" / "result.json"
        if not done.is_file():
            return None
        tests.append(json.loads(done.read_text())["acc"])
    return {"lr": lr, "val": tries[lr]["acc"], "test": float(np.mean(tests)), "seeds": tests[:seeds]}


def cell_tables(task: str, budget: int, args: argparse.Namespace, cell_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(per-layout table, per-ranker agreement table, the cell's ground-truth summary)."""
    saved = json.loads((cell_dir / "layouts.json").read_text())
    scores = pd.read_csv(cell_dir / "scores.csv", dtype={"hash": str})
    rows = []
    for entry in saved["layouts"]:
        truth = read_truth(cell_dir / "standalone" / entry["hash"], args.lrs, args.seeds)
        if truth is None:
            continue
        row = {"cell": f"{task}@{budget}", "hash": entry["hash"], "kind": entry["kind"], "params": entry["params"], "lr": truth["lr"],
               "truth": round(truth["test"], 4), **{f"seed{i}": s for i, s in enumerate(truth["seeds"])}}
        for recipe in args.supernets:
            got = scores[(scores["recipe"] == recipe) & (scores["hash"] == entry["hash"]) & (scores["kind"] == "score")]
            if len(got):
                row[f"{recipe}_acc"], row[f"{recipe}_loss"] = float(got["acc"].iloc[0]), float(got["loss"].iloc[0])
        rows.append(row)
    layouts = pd.DataFrame(rows)
    summary = {"cell": f"{task}@{budget}", "layouts": len(saved["layouts"]), "with_truth": len(layouts), "notes": "; ".join(saved["notes"])}
    if len(layouts) < 4:
        return layouts, pd.DataFrame(), summary
    per_seed = layouts[[f"seed{i}" for i in range(args.seeds)]].to_numpy()
    truth = layouts["truth"].to_numpy()
    summary.update({"spread_sd": float(truth.std(ddof=1)), "range": float(truth.max() - truth.min()),
                    "seed_sd": float(np.sqrt(per_seed.var(axis=1, ddof=1).mean())),
                    "mean_se": float(np.sqrt(per_seed.var(axis=1, ddof=1).mean() / args.seeds)),
                    "split_half_tau": split_half(per_seed) if args.seeds >= 2 else float("nan"),
                    "best": float(truth.max()), "median": float(np.median(truth))})
    rankers = {"parameter count": layouts["params"].to_numpy(float)}
    for recipe in args.supernets:
        if f"{recipe}_acc" in layouts:
            rankers[f"{recipe}: val acc"] = layouts[f"{recipe}_acc"].to_numpy()
            rankers[f"{recipe}: val loss"] = -layouts[f"{recipe}_loss"].to_numpy()
    table = []
    for name, values in rankers.items():
        table.append({"cell": f"{task}@{budget}", "ranker": name, **{k: round(v, 4) for k, v in agreement(values, truth, args.rounds).items()}})
    picks = scores[scores["kind"] == "pick"]
    for recipe in args.supernets:
        first = picks[(picks["recipe"] == recipe) & (picks["rank"] == 0)]
        got = layouts[layouts["hash"].isin(first["hash"])]
        if len(got):
            summary[f"pick_regret_{recipe}"] = round(float(truth.max() - got["truth"].iloc[0]), 4)
    return layouts, pd.DataFrame(table), summary


def plot(agree: pd.DataFrame, summaries: list[dict], path: Path) -> None:
    """Per cell, each ranker's τ with its bootstrap 90 % interval, beside the ground truth's
    split-half τ (the ceiling) and parameter count's τ (the floor to beat)."""
    cells = list(dict.fromkeys(agree["cell"]))
    fig, axes = plt.subplots(1, len(cells), figsize=(4.5 * len(cells), 4.8), squeeze=False, sharey=True)
    for ax, cell in zip(axes[0], cells):
        part = agree[agree["cell"] == cell].reset_index(drop=True)
        y = np.arange(len(part))
        ax.errorbar(part["tau"], y, xerr=[part["tau"] - part["tau_low"], part["tau_high"] - part["tau"]], fmt="o", capsize=3)
        ax.set_yticks(y, part["ranker"], fontsize=7)
        ceiling = next(s for s in summaries if s["cell"] == cell).get("split_half_tau")
        if ceiling is not None and not np.isnan(ceiling):
            ax.axvline(ceiling, color="g", linestyle="--", label=f"ground truth split-half τ {ceiling:.2f}")
        ax.axvline(float(part.loc[part["ranker"] == "parameter count", "tau"].iloc[0]), color="r", linestyle=":", label="parameter count τ")
        ax.axvline(0, color="k", linewidth=0.5)
        ax.set_xlim(-1, 1)
        ax.set_xlabel("Kendall τ with stand-alone test accuracy (90 % bootstrap)")
        ax.set_title(cell)
        ax.legend(fontsize=7, loc="lower left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(args: argparse.Namespace, work: Path, seconds: float) -> str:
    layouts, agree, summaries = [], [], []
    for text in args.cells:
        task, budget = parse_cell(text)
        cell_dir = work / f"{task}@{budget}"
        if not (cell_dir / "scores.csv").is_file():
            summaries.append({"cell": text, "layouts": 0, "with_truth": 0, "notes": "not run"})
            continue
        lay, agr, summary = cell_tables(task, budget, args, cell_dir)
        layouts.append(lay)
        agree.append(agr)
        summaries.append(summary)
    agree_table = pd.concat(agree, ignore_index=True) if agree else pd.DataFrame()
    out = ROOT / "benchmarks" / "results"
    write_text_atomic(out / f"ranking-{args.name}.csv", pd.concat(layouts, ignore_index=True).to_csv(index=False) if layouts else "")
    if len(agree_table):
        plot(agree_table, summaries, out / f"ranking-{args.name}.png")
    cfg = compose_train(args.overrides)
    summary_table = pd.DataFrame(summaries)
    where = {"hi": f"{1 + BAND:g}·budget", "band": f"{2 * BAND / (1 + BAND):.4f}"}
    recipes = ", ".join(f"`{r}` ({' '.join(o.format(**where) for o in SUPERNETS[r]) or 'sampling.rule=uniform'})" for r in args.supernets)
    text = "\n".join([
        f"# Supernet ranking at equal size: {args.name}", "", f"Machine: {json.dumps(machine_info())}", "",
        f"`python benchmarks/ranking.py --cells {' '.join(args.cells)} --name {args.name} --supernets {' '.join(args.supernets)} "
        f"--supernet-epochs {args.supernet_epochs} --lrs {' '.join(f'{x:g}' for x in args.lrs)} --seeds {args.seeds}"
        f"{f' --epochs {args.epochs}' if args.epochs else ''} {' '.join(args.overrides)}`", "",
        (f"Per cell: layouts with trainable params within ±{BAND:.0%} of the budget (GLoRA's LoRA layout, A/D only, vector/constant "
         "only, with and without C and E, random draws, the searches' picks). Labelled images every ranker saw: the task's train "
         f"800 (supernet training) and val 200 (scores){f' + {cfg.data.rank_images} extra' if cfg.data.rank_images else ''}. Ground "
         f"truth: each layout trained alone on train ({cfg.trainer.epochs if not args.epochs else args.epochs} epochs), lr chosen "
         f"on val from {list(args.lrs)} with seed 0, then {args.seeds} seeds at that lr scored on test; mean over seeds. Supernets: "
         f"{args.supernet_epochs} epochs on train, recipes {recipes}. "
         f"GLoRA steps: {cfg.optim.describe_steps()}. Wall time of this report's runs: see the run dirs; this call took {seconds:.0f} s."), "",
        "## The ground truth: is there anything to rank?", "",
        ("`spread_sd`: std of the layouts' ground truth; `seed_sd`: std of one run over seeds (pooled); `mean_se`: standard error of "
         "a layout's mean; `split_half_tau`: Kendall τ between the means over the first and second half of the seeds — no ranker "
         "can be judged beyond it; `pick_regret_<recipe>`: best ground truth minus that of the recipe's own search pick."), "",
        markdown_table(summary_table), "",
        "## Rankers", "",
        ("`tau_p`: one-sided permutation p of τ; `tau_low` / `tau_high`: bootstrap 90 % interval over layouts; `regret`: best "
         "ground truth minus that of the ranker's favourite among these layouts (ties: their mean)."), "",
        markdown_table(agree_table) if len(agree_table) else "(no cell has ground truth yet)", "",
        *([f"![τ per ranker](ranking-{args.name}.png)", ""] if len(agree_table) else []),
    ])
    write_text_atomic(out / f"ranking-{args.name}.md", text)
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", nargs="+", required=True, help="<task>@<budget>, e.g. count@4096 orientation@16384")
    parser.add_argument("--name", required=True, help="results file suffix, e.g. cpu-eq")
    parser.add_argument("--supernets", nargs="+", default=list(SUPERNETS), choices=list(SUPERNETS))
    parser.add_argument("--supernet-epochs", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=None, help="stand-alone epochs (default: the config's trainer.epochs)")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="draws of the layouts and the searches")
    parser.add_argument("--rounds", type=int, default=2000, help="permutations and bootstrap draws")
    parser.add_argument("--report", action="store_true", help="only write the tables from what is finished")
    parser.add_argument("--work", default="runs/bench-ranking-eq")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of glora-train (e.g. experiment=real_cpu)")
    args = parser.parse_args(argv)
    for cell in args.cells:
        parse_cell(cell)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work) / args.name
    started = time.time()
    if not args.report:
        for text in args.cells:
            task, budget = parse_cell(text)
            run_cell(task, budget, args, work / f"{task}@{budget}")
    print(report(args, work, time.time() - started))


if __name__ == "__main__":
    main()
