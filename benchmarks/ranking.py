#!/usr/bin/env python
"""Can the search trust the supernet? Kendall τ and Spearman ρ between a layout's
supernet-inherited accuracy on the search's ranking images (val, plus ``data.rank_images``
held-out ones) and its stand-alone accuracy: the layout trained alone from the backbone on
train and scored on the test split (1,000 images; a benchmark may look at test, the search
never does), so the truth shares no images with what the search ranks on.

Layouts spanning the budget range: the LoRA-equivalent ones (B = LoRA_r everywhere, each
rank of the space under the largest budget), random legal layouts at budgets spread
geometrically over the range, and the top layouts of a small evolution at the largest
budget. Every stand-alone run uses the recipe under test (same lr, epochs, multipliers).

    .venv/bin/python benchmarks/ranking.py --name cpu-after data.task=count data.rank_images=1000
    .venv/bin/python benchmarks/ranking.py --name cpu-before data.task=count glora.vector_b=sum space.ranks=[8,4]
    .venv/bin/python benchmarks/ranking.py --name cpu-sn500 --supernet-epochs 500 data.task=count trainer.epochs=20 data.rank_images=1000

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
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from accuracy import glora_layout, run_method
from glora.search import (
    Budget,
    Evaluator,
    Evolution,
    LayoutOps,
    run_generations,
    timed,
    top_k,
)
from glora.search.report import markdown_table
from glora.spaces import Layout
from machine import machine_info

from glora.jobs.app import CONF_DIR
from glora.run.device import pick_device
from glora.run.io import write_text_atomic
from glora.stages.train import load_trained, train_supernet

log = logging.getLogger("ranking")


def pick_layouts(ops_for, template: Layout, low: int, high: int, randoms: int, evaluate, search_top: int, seed: int) -> list[tuple[str, Layout]]:
    """(kind, layout) for the study: LoRA-equivalent, random across [low, high], search top."""
    rng = random.Random(seed)
    ops = ops_for(high, 0)
    picked = [("lora", ops.layout(layers)) for layers in ops.lora_layouts(rng) if ops.legal(layers)]
    for budget in np.geomspace(low, high, randoms):
        ranged = ops_for(int(budget), int(0.8 * budget))
        picked.append(("random", ranged.layout(ranged.random(rng))))
    if search_top:
        records = run_generations(Evolution(population=20, generations=4, budget=high, seed=seed), ops, timed(evaluate), show_progress=False)
        seen = {layout.hash for _, layout in picked}
        best = [r for r in top_k(records, len(records)) if r.hash not in seen][:search_top]
        picked += [("search top", ops.layout(r.layers)) for r in best]
    return picked


def earlier_layouts(run: Path, table: Path) -> list[tuple[str, Layout]]:
    """(kind, layout) of an earlier run, in its order, from its saved layouts and table."""
    earlier = pd.read_csv(table, dtype={"hash": str})
    kinds = dict(zip(earlier["hash"], earlier["kind"]))
    files = sorted((run / "layouts").glob("*.json"))
    if not files:
        raise SystemExit(f"--layouts-of: no layouts in {run / 'layouts'}; run that benchmark first")
    return [(kinds[path.stem.split("-", 1)[1]], Layout.load(path)) for path in files]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="results file suffix, e.g. cpu-after")
    parser.add_argument("--low", type=int, default=2000, help="smallest budget of the random layouts")
    parser.add_argument("--high", type=int, default=20000, help="largest budget (LoRA layouts and the search)")
    parser.add_argument("--randoms", type=int, default=6)
    parser.add_argument("--search-top", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--supernet-epochs", type=int, default=None,
                        help="the supernet's epochs (default: trainer.epochs, which the stand-alone runs always use)")
    parser.add_argument("--layouts-of", default=None, metavar="NAME",
                        help="score the layouts of the earlier run NAME (its csv and --work folder) instead of picking anew: "
                             "two recipes compared on the same layouts")
    parser.add_argument("--work", default="runs/bench-ranking")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the supernet config (the recipe under test)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = OmegaConf.to_object(compose("train", overrides=args.overrides))
    work = Path(args.work) / args.name
    started = time.time()
    supernet_epochs = args.supernet_epochs or cfg.trainer.epochs
    train_supernet(replace(cfg, trainer=replace(cfg.trainer, epochs=supernet_epochs)), work / "supernet")
    device = pick_device(cfg.trainer.device)
    sn = load_trained(work / "supernet", device)
    evaluate = Evaluator(sn.model, sn.task.ranking_loader(), device)
    template = Layout.sample(sn.model, sn.space, seed=0)
    if args.layouts_of:
        picked = earlier_layouts(Path(args.work) / args.layouts_of, ROOT / "benchmarks" / "results" / f"ranking-{args.layouts_of}.csv")
    else:
        picked = pick_layouts(lambda hi, lo: LayoutOps(template, Budget(hi, lo)), template, args.low, args.high, args.randoms,
                              evaluate, args.search_top, args.seed)
    n_rank = evaluate.count
    rows = []
    for index, (kind, layout) in enumerate(picked):
        inherited = evaluate(layout)
        path = work / "layouts" / f"{index:02d}-{layout.hash}.json"
        layout.save(path)
        build = glora_layout(lambda _m, p=path: Layout.load(p), cfg.trainer.seed, cfg.glora)
        alone = run_method(f"layout {layout.hash}", build, cfg, cfg.data.task, cfg.trainer.seed, cfg.optim.lr, ("train", "test"),
                           work / "standalone" / layout.hash)
        rows.append({"kind": kind, "hash": layout.hash, "params": layout.trainable_params, "inherited": round(inherited, 4),
                     "standalone_test": round(alone["acc"], 4)})
        log.info("%s %s (%d params): inherited %.3f, stand-alone %.3f", kind, layout.hash, layout.trainable_params, inherited, alone["acc"])
    table = pd.DataFrame(rows).sort_values("params")
    tau, tau_p = stats.kendalltau(table["inherited"], table["standalone_test"])
    rho, rho_p = stats.spearmanr(table["inherited"], table["standalone_test"])
    band = table[table["params"] >= args.high / 2]  # the layouts a search at the top budget chooses between
    band_tau, _ = stats.kendalltau(band["inherited"], band["standalone_test"])
    chosen = table.loc[table["inherited"].idxmax()]
    best = table["standalone_test"].max()
    out = ROOT / "benchmarks" / "results"
    write_text_atomic(out / f"ranking-{args.name}.csv", table.to_csv(index=False))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for kind, marker in (("lora", "o"), ("random", "x"), ("search top", "s")):
        part = table[table["kind"] == kind]
        ax.scatter(part["inherited"], part["standalone_test"], marker=marker, label=kind)
    ax.set_xlabel(f"supernet-inherited accuracy, {n_rank} ranking images (what the search ranks by)")
    ax.set_ylabel("stand-alone test accuracy (trained on train)")
    ax.set_title(f"{args.name}: Kendall τ {tau:.2f}, Spearman ρ {rho:.2f}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"ranking-{args.name}.png", dpi=120)
    plt.close(fig)
    text = "\n".join([
        f"# Supernet ranking: {args.name}", "", f"Machine: {json.dumps(machine_info())}", "",
        f"`python benchmarks/ranking.py --name {args.name}{f' --supernet-epochs {args.supernet_epochs}' if args.supernet_epochs else ''}"
        f"{f' --layouts-of {args.layouts_of}' if args.layouts_of else ''} "
        f"{' '.join(args.overrides)}`: a {supernet_epochs}-epoch supernet on "
        f"{cfg.data.task} train; {len(table)} layouts from {table['params'].min():,} to {table['params'].max():,} params, each scored "
        f"with inherited supernet weights on {n_rank} ranking images (val + data.rank_images) and trained alone ({cfg.trainer.epochs} "
        f"epochs on train, lr {cfg.optim.lr:g}, {cfg.optim.describe_steps()}, up init {cfg.glora.up_init}, vector B on the inputs' "
        f"{cfg.glora.vector_b}, space ranks {list(sn.space.ranks)}) then scored on test. "
        f"{time.time() - started:.0f} s.", "",
        f"**Kendall τ = {tau:.3f}** (p = {tau_p:.3f}), **Spearman ρ = {rho:.3f}** (p = {rho_p:.3f}) over all {len(table)} layouts; "
        f"among the {len(band)} with ≥ {args.high // 2:,} params (what a search at the top budget chooses between) τ = {band_tau:.3f}. "
        "The layout the supernet ranks "
        f"first ({chosen['hash']}, {chosen['kind']}) reaches {chosen['standalone_test']:.3f} stand-alone; the best stand-alone layout "
        f"here reaches {best:.3f}.", "",
        markdown_table(table), "", f"![inherited vs stand-alone](ranking-{args.name}.png)", "",
    ])
    write_text_atomic(out / f"ranking-{args.name}.md", text)
    print(text)


if __name__ == "__main__":
    main()
