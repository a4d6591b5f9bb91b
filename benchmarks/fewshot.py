"""Few-shot learning (the GLoRA paper's second protocol): accuracy against k labelled images
per class, k in {1, 2, 4, 8, 16}, on real tasks.

Each (task, k, draw) cell is one run of the accuracy benchmark's protocol on a k-shot draw
(``data.shots=k``, ``data.split_seed=draw``): every method trains on the k per class, chooses
its lr (the probe its C) on k more per class, then trains on both and is scored on the whole
test split; the search (supernet and evolution) sees only those labels. Draws play the part
of seeds: each is another draw of the labelled images and trains with seed 0. Methods:
searched GLoRA under ``--budget``, PEFT LoRA and GLoRA's LoRA layout of the budget's rank,
and the logistic probe. Cells resume (finished runs are read back). Writes
``benchmarks/results/fewshot-<name>.{md,csv,png}``: per method and k the mean ± std over
tasks and draws, searched against each rival per k paired over (task, draw), and accuracy
against k.

    python benchmarks/fewshot.py --tasks mnist elpv animals --shots 1 2 4 8 16 --draws 3 experiment=real_cpu
    python benchmarks/fewshot.py --quick          # smoke backbone, one task, k in {1, 2}: checks the script runs
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as acc  # noqa: E402
from machine import machine_info  # noqa: E402
from stats import paired_tests  # noqa: E402

from glora.run.io import atomic_write, write_text_atomic  # noqa: E402
from glora.run.plots import save_figure  # noqa: E402
from glora.search.report import markdown_table  # noqa: E402

log = logging.getLogger("fewshot")
ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["mnist", "elpv", "animals"])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--draws", type=int, default=3, help="k-shot draws per (task, k): data.split_seed 0..draws-1")
    parser.add_argument("--budget", type=int, default=73728, help="the searched layouts' budget (default: LoRA r=1 on ViT-S/14's targets)")
    parser.add_argument("--rank", type=int, default=1, help="the LoRA rank the budget holds (PEFT LoRA and GLoRA's LoRA layout)")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2], help="the lr grid every method chooses from on its val shots")
    parser.add_argument("--Cs", type=float, nargs="+", default=list(acc.DEFAULT_CS), help="the logistic probe's C grid")
    parser.add_argument("--epochs", type=int, default=30, help="every method's training (few images: more epochs than VTAB-1k)")
    parser.add_argument("--supernet-epochs", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="smoke backbone and search, one task, k in {1, 2}, one draw")
    parser.add_argument("--report", action="store_true", help="only write the table from finished cells")
    parser.add_argument("--name", default=None, help="results file name (default: the machine's tag)")
    parser.add_argument("--work", default="runs/bench-fewshot")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the pipeline config, e.g. experiment=real_cpu")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.shots, args.draws, args.epochs, args.supernet_epochs, args.lrs = ["sklearn_digits"], [1, 2], 1, 2, 2, [1e-3, 1e-2]
        args.budget, args.rank = 1536, 1  # LoRA r=1 on the smoke backbone's targets
    return args


def methods(budget: int, rank: int) -> list[str]:
    return [f"glora_search_{budget}", f"lora_r{rank}", f"glora_lora_r{rank}", "probe_logreg"]


def cell_dir(work: Path, k: int, draw: int) -> Path:
    return work / f"k{k}-draw{draw}"


def run_cells(cfg, args, work: Path) -> None:
    names = methods(args.budget, args.rank)
    for k in args.shots:
        for draw in range(args.draws):
            shot_cfg = replace(cfg, data=replace(cfg.data, shots=k, val_shots=None, split_seed=draw))
            setup = acc.Setup(tasks=args.tasks, run_tasks=args.tasks, budgets=[args.budget], seeds=1, methods=names,
                              grids={m: list(args.Cs if m == "probe_logreg" else args.lrs) for m in names}, searches=None,
                              supernet_epochs=args.supernet_epochs, peft_glora_ranks=[])
            for task in args.tasks:
                log.info("== %s, %d-shot, draw %d", task, k, draw)
                acc.benchmark_task(shot_cfg, task, setup, cell_dir(work, k, draw))


def collect(args, work: Path) -> pd.DataFrame:
    """Every finished cell's test rows, with its k and draw (the draw is the pairing 'seed')."""
    frames = []
    for k in args.shots:
        for draw in range(args.draws):
            for task in args.tasks:
                path = cell_dir(work, k, draw) / task / "final.csv"
                if path.is_file():
                    rows = pd.read_csv(path)
                    frames.append(rows.assign(k=k, draw=draw, seed=draw))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot(table: pd.DataFrame, path: Path, title: str) -> dict:
    """Mean test accuracy (over tasks and draws) against k, one line per method, ± std as bars."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, rows in table.groupby("method", sort=False):
        by_k = rows.groupby("k")["acc"].agg(["mean", "std"]).fillna(0.0)
        (line,) = ax.plot(by_k.index, by_k["mean"], marker="o", label=method)
        ax.errorbar(by_k.index, by_k["mean"], yerr=by_k["std"], fmt="none", capsize=3, ecolor=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set(xlabel="labelled images per class (k)", ylabel="test accuracy", title=title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def report(cfg, args, work: Path, out: Path, tag: str, command: str) -> pd.DataFrame:
    runs = collect(args, work)
    if runs.empty:
        raise SystemExit(f"fewshot.py: no finished cell under {work}; run the cells first")
    names = methods(args.budget, args.rank)
    runs = runs[runs["method"].isin(names)]
    summary = (runs.groupby(["method", "k"], sort=False)["acc"].agg(["mean", "std", "count"]).reset_index()
               .pivot(index="method", columns="k", values="mean").reindex(names))
    spread = runs.groupby(["method", "k"], sort=False)["acc"].std().unstack("k").reindex(names)
    cells = summary.copy().astype(object)
    for m in summary.index:
        for k in summary.columns:
            mean, sd = summary.loc[m, k], spread.loc[m, k]
            cells.loc[m, k] = "–" if pd.isna(mean) else f"{mean:.3f}" + ("" if pd.isna(sd) else f" ± {sd:.3f}")
    cells.columns = [f"k={k}" for k in cells.columns]
    tests = []
    for k, rows in runs.groupby("k"):
        for row in paired_tests(rows, [args.budget]).to_dict("records"):
            tests.append({"k": k, **row})
    tests = pd.DataFrame(tests)
    if len(tests):  # one (task, draw) pair has no spread: nothing was tested, and a tie would claim it was
        tests.loc[tests["pairs"] < 2, "verdict"] = "untested (1 pair)"
    grids = {m: list(args.Cs if m == "probe_logreg" else args.lrs) for m in names}
    edges = [f"k={k}, draw {d}: {e}" for (k, d), rows in runs.groupby(["k", "draw"]) for e in acc.edge_choices(rows, grids)]
    atomic_write(out / f"fewshot-{tag}.csv", lambda tmp: runs.to_csv(tmp, index=False))
    plot(runs, out / f"fewshot-{tag}.png", f"{cfg.model.name}: {', '.join(args.tasks)}, {args.draws} draws")
    k_list = ", ".join(str(k) for k in args.shots)
    text = "\n".join([
        f"# Few-shot: {cfg.model.name} on {', '.join(args.tasks)}", "",
        f"Machine: {json.dumps(machine_info())}", "",
        f"`{command}`", "",
        (f"Protocol: k in {{{k_list}}} labelled images per class drawn from the task's train + val pool (data.shots=k, "
         f"data.split_seed = the draw, {args.draws} draws), k more per class for validation; test is the task's whole test split. "
         f"Every method trains {cfg.trainer.epochs} epochs on the k per class, chooses its lr from {args.lrs} (the probe its C from "
         f"{args.Cs}) on the val shots, then trains on both (seed 0) and is scored once on test. Searched GLoRA: a "
         f"{args.supernet_epochs}-epoch supernet on the k per class, evolution {cfg.search.population} x {cfg.search.generations} "
         f"ranked on the val shots under {args.budget:,} params; rivals: PEFT LoRA r={args.rank} (alpha 8) and GLoRA's LoRA_{args.rank} "
         "layout at that budget, and the logistic probe. Nothing else labelled is seen."), "",
        "Test accuracy, mean ± std over tasks and draws (no ± with one):", "", markdown_table(cells.reset_index()), "",
        ("Chosen on an edge of its grid: " + "; ".join(edges) + "." if edges else "No choice lies on an edge of its grid."), "",
        ("Searched GLoRA against each rival family per k, paired over (task, draw); the best rival is picked on test. "
         "`t_p`: paired t-test; a win or loss needs p < 0.05, anything else is a tie."), "",
        markdown_table(tests) if len(tests) else "(no pairs yet)", "",
        f"![accuracy vs k](fewshot-{tag}.png)", "",
    ])
    write_text_atomic(out / f"fewshot-{tag}.md", text)
    log.info("\n%s", cells.to_string())
    return runs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg, work, tag, _ = acc.flag_run(args.quick, [f"trainer.epochs={args.epochs}", "data.rank_images=0", "search.rerank=0", *args.overrides], args.work, args.name)
    command = (f"python benchmarks/fewshot.py --tasks {' '.join(args.tasks)} --shots {' '.join(map(str, args.shots))} --draws {args.draws} "
               f"--budget {args.budget} --rank {args.rank} --epochs {args.epochs} --supernet-epochs {args.supernet_epochs} "
               f"--lrs {' '.join(f'{x:g}' for x in args.lrs)} {' '.join(args.overrides)}").strip()
    if not args.report:
        run_cells(cfg, args, work)
    report(cfg, args, work, Path(args.out), tag, command)


if __name__ == "__main__":
    main()
