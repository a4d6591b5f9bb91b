"""Domain generalisation (the GLoRA paper's third protocol): train on a source task, then
score the same models, unchanged, on shifted copies of its test split and on another domain
with the same classes.

Per training regime (``vtab``: the VTAB-1k shape, 800 + 200 labels; ``<k>shot``: k per class)
each method runs the accuracy benchmark's protocol on the source task (lr chosen on val,
then train+val, seeds 0..seeds-1) and its final models are exported as plain timm; then
``glora-evaluate``'s ``run_evaluate`` scores every model on the source's test split, on each
shift at each severity and on the other-domain targets. Writes
``benchmarks/results/domain-<name>.{md,csv,png}``: per method, regime and target the mean ±
std over seeds, the drop from the source, and searched GLoRA against each rival per target
(paired over seeds).

    python benchmarks/domain.py --source mnist --regimes vtab 16shot --seeds 3 experiment=real_cpu
    python benchmarks/domain.py --quick          # smoke backbone: checks the script runs
"""
from __future__ import annotations

import argparse
import json
import logging
import re
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

from glora.data.shifts import SHIFTS  # noqa: E402
from glora.run.io import atomic_write, write_text_atomic  # noqa: E402
from glora.run.plots import save_figure  # noqa: E402
from glora.search.report import markdown_table  # noqa: E402
from glora.stages.evaluate import EvaluateConfig, EvaluateJobConfig, run_evaluate  # noqa: E402

log = logging.getLogger("domain")
ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="mnist")
    parser.add_argument("--regimes", nargs="+", default=["vtab", "16shot"], help="vtab, or <k>shot")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shifts", nargs="+", default=sorted(SHIFTS))
    parser.add_argument("--severities", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--others", nargs="+", default=["sklearn_digits"], help="other-domain tasks with the source's classes")
    parser.add_argument("--budget", type=int, default=73728, help="the searched layout's budget (default: LoRA r=1 on ViT-S/14's targets)")
    parser.add_argument("--rank", type=int, default=1, help="the LoRA rank the budget holds")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--full-ft-lrs", type=float, nargs="+", default=[1e-5, 3e-5, 1e-4, 3e-4, 1e-3])
    parser.add_argument("--epochs", type=int, default=None, help="every method's training (default: the config's; k-shot regimes: 30)")
    parser.add_argument("--supernet-epochs", type=int, default=None)
    parser.add_argument("--eval-max-images", type=int, default=None,
                        help="score each target on a seeded subset of this many test images (the same for every model); default: all")
    parser.add_argument("--quick", action="store_true", help="smoke backbone, one regime, one seed, two targets")
    parser.add_argument("--report", action="store_true", help="only write the table from finished runs")
    parser.add_argument("--name", default=None)
    parser.add_argument("--work", default="runs/bench-domain")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the pipeline config, e.g. experiment=real_cpu")
    args = parser.parse_args(argv)
    if args.quick:
        args.source, args.regimes, args.seeds, args.shifts, args.severities = "sklearn_digits", ["vtab"], 1, ["inversion"], [5]
        args.others, args.budget, args.epochs, args.supernet_epochs, args.lrs, args.full_ft_lrs = [], 1536, 1, 1, [1e-2], [1e-4]
    for regime in args.regimes:
        if regime != "vtab" and not re.fullmatch(r"[1-9]\d*shot", regime):
            parser.error(f"--regimes {regime}: use vtab or <k>shot, e.g. 16shot")
    return args


def methods(budget: int, rank: int) -> list[str]:
    return [f"glora_search_{budget}", f"lora_r{rank}", f"glora_lora_r{rank}", "full_ft", "probe"]


def targets(args) -> list[str]:
    return [args.source, *(f"{args.source}@{s}:{v}" for s in args.shifts for v in args.severities), *args.others]


def regime_cfg(cfg, regime: str, args):
    if regime == "vtab":
        return replace(cfg, trainer=replace(cfg.trainer, epochs=args.epochs or cfg.trainer.epochs))
    k = int(regime[: -len("shot")])
    return replace(cfg, data=replace(cfg.data, shots=k, split_seed=0), trainer=replace(cfg.trainer, epochs=args.epochs or 30))


def train_and_score(cfg, args, work: Path) -> None:
    names = methods(args.budget, args.rank)
    for regime in args.regimes:
        rcfg = regime_cfg(cfg, regime, args)
        setup = acc.Setup(tasks=[args.source], run_tasks=[args.source], budgets=[args.budget], seeds=args.seeds, methods=names,
                          grids={m: list(args.full_ft_lrs if m == "full_ft" else args.lrs) for m in names}, searches=None,
                          supernet_epochs=args.supernet_epochs, peft_glora_ranks=[], export_final=True)
        acc.benchmark_task(rcfg, args.source, setup, work / regime)
        for model_json in sorted((work / regime / args.source).glob("**/seed*/model.json")):
            run = model_json.parent
            if (run / "evaluate" / "metrics.json").is_file():
                continue
            job = EvaluateJobConfig(paths=rcfg.paths, trainer=rcfg.trainer, model=rcfg.model, pretrain=rcfg.pretrain,
                                    data=replace(rcfg.data, task=args.source, shots=None, val_shots=None),
                                    evaluate=EvaluateConfig(run=str(run), targets=targets(args), max_images=args.eval_max_images))
            (run / "evaluate").mkdir(exist_ok=True)
            run_evaluate(job, run / "evaluate")


def collect(args, work: Path) -> pd.DataFrame:
    """One row per (regime, method, seed, target) from every finished evaluation."""
    names = methods(args.budget, args.rank)
    rows = []
    for regime in args.regimes:
        for method in names:
            for metrics in sorted((work / regime / args.source / method).glob("**/seed*/evaluate/metrics.json")):
                run = metrics.parent.parent  # the training run: its result.json, the exported model, evaluate/
                seed, params = int(run.name[len("seed"):]), json.loads((run / "result.json").read_text())["adapter_params"]
                for r in json.loads(metrics.read_text())["rows"]:
                    rows.append({"regime": regime, "method": method, "seed": seed, "adapter_params": params, "target": r["target"],
                                 "acc": r["acc"], "nll": r["nll"], "ece": r["ece"]})
    return pd.DataFrame(rows)


def plot(runs: pd.DataFrame, source: str, path: Path, title: str) -> dict:
    """Per regime, each method's mean accuracy on each target (source first), one line per method."""
    regimes = list(dict.fromkeys(runs["regime"]))
    fig, axes = plt.subplots(1, len(regimes), figsize=(6 * len(regimes), 4), squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        rows = runs[runs["regime"] == regime]
        order = list(dict.fromkeys(rows["target"]))
        for method, part in rows.groupby("method", sort=False):
            mean = part.groupby("target")["acc"].mean().reindex(order)
            ax.plot(range(len(order)), mean.values, marker="o", label=method)
        ax.set_xticks(range(len(order)), [t.removeprefix(f"{source}-") for t in order], rotation=70, fontsize=7)
        ax.set(ylabel=f"test accuracy ({regime})", title=f"{regime}: trained on {source}")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def report(cfg, args, work: Path, out: Path, tag: str, command: str) -> pd.DataFrame:
    runs = collect(args, work)
    if runs.empty:
        raise SystemExit(f"domain.py: no finished evaluation under {work}; run the training first")
    source_acc = runs[runs["target"] == args.source].set_index(["regime", "method", "seed"])["acc"]
    runs["drop"] = runs["acc"] - runs.set_index(["regime", "method", "seed"]).index.map(source_acc)
    summary = runs.groupby(["regime", "target", "method"], sort=False).agg(acc=("acc", "mean"), sd=("acc", "std"), drop=("drop", "mean"),
                                                                              ece=("ece", "mean")).reset_index()
    summary["cell"] = [f"{a:.3f} ± {0 if pd.isna(s) else s:.3f} ({d:+.3f})" for a, s, d in zip(summary["acc"], summary["sd"], summary["drop"])]
    wide = summary.pivot_table(index=["regime", "target"], columns="method", values="cell", aggfunc="first", sort=False)
    wide = wide[[m for m in methods(args.budget, args.rank) if m in wide.columns]].reset_index()
    tests = []
    for (regime, target), rows in runs.groupby(["regime", "target"], sort=False):
        for row in paired_tests(rows.assign(task=target), [args.budget]).to_dict("records"):
            tests.append({"regime": regime, "target": target, "rival": row["best_rival"], "difference": row["difference"],
                          "t_p": row["t_p"], "verdict": row["verdict"]})
    atomic_write(out / f"domain-{tag}.csv", lambda tmp: runs.to_csv(tmp, index=False))
    plot(runs, args.source, out / f"domain-{tag}.png", f"{cfg.model.name}, trained on {args.source}")
    text = "\n".join([
        f"# Domain generalisation: {cfg.model.name} trained on {args.source}", "",
        f"Machine: {json.dumps(machine_info())}", "", f"`{command}`", "",
        (f"Protocol: each method is tuned on the source's val split (lr from {args.lrs}; full FT from {args.full_ft_lrs}), trained on "
         f"train+val for seeds 0..{args.seeds - 1} and exported as plain timm; `glora-evaluate` then scores every model, unchanged, on "
         f"the source's test split, on its shifts ({', '.join(args.shifts)} at severities {args.severities}) and on "
         f"{', '.join(args.others) or 'no other domain'}"
         f"{f' (each on the same seeded subset of {args.eval_max_images} of its test images)' if args.eval_max_images else ''}. Searched GLoRA: one search under {args.budget:,} params on the source's labels. "
         f"Regimes: {', '.join(args.regimes)} (a k-shot regime: one draw, data.split_seed=0, k more per class for val; seeds vary the training)."), "",
        "Test accuracy, mean ± std over seeds (in brackets: the change from the same models on the source's own test split):", "",
        markdown_table(wide), "",
        "Searched GLoRA against each rival family's best member per target, paired over seeds (p < 0.05 for a win or loss, else a tie):", "",
        markdown_table(pd.DataFrame(tests)) if tests else "(no pairs)", "", f"![accuracy per target](domain-{tag}.png)", "",
    ])
    write_text_atomic(out / f"domain-{tag}.md", text)
    return runs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg, work, tag, _ = acc.flag_run(args.quick, ["data.rank_images=0", "search.rerank=0", *args.overrides], args.work, args.name)
    command = (f"python benchmarks/domain.py --source {args.source} --regimes {' '.join(args.regimes)} --seeds {args.seeds} "
               f"--shifts {' '.join(args.shifts)} --severities {' '.join(map(str, args.severities))} --others {' '.join(args.others)} "
               f"--budget {args.budget} --rank {args.rank} --lrs {' '.join(map(str, args.lrs))}"
               f"{f' --eval-max-images {args.eval_max_images}' if args.eval_max_images else ''} {' '.join(args.overrides)}").strip()
    if not args.report:
        train_and_score(cfg, args, work)
    report(cfg, args, work, Path(args.out), tag, command)


if __name__ == "__main__":
    main()
