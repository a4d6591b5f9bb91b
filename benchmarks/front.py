"""One front search against one search per budget. At equal total evaluations, is the
front search's best layout under each budget as good as a single-budget evolution at that
budget, and does it cost one search instead of three? On the embedded default supernet
(trained once, cached in ``--work``), for each seed: (a) one ``search=pareto`` search under
the largest budget per ``--shares`` value (0: plain NSGA-II; s: a share s of every
generation aimed at the budgets, ``search.targets``), (b) one ``search=evolution`` search
per budget, their evaluations adding up to one front search's. Both through
``run_search`` (what ``glora-search`` runs); a finished search of the same settings is
read back from ``--work`` (delete it after changing the search code). Writes
``benchmarks/results/front-<machine>.md`` and ``front-<machine>.png``.

    python benchmarks/front.py                       # seeds 0 1 2, budgets 4096 8192 16384, 20 x 9 vs 3 x (20 x 3)
    python benchmarks/front.py --quick               # experiment=smoke, small searches: checks the script runs (results in --work)
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from machine import machine_info, machine_tag  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from glora.jobs.app import CONF_DIR  # noqa: E402
from glora.run.io import write_text_atomic  # noqa: E402
from glora.run.plots import save_figure  # noqa: E402
from glora.search.pareto import hypervolume  # noqa: E402
from glora.search.report import markdown_table  # noqa: E402
from glora.stages.front import best_under, read_front  # noqa: E402
from glora.stages.search import run_search  # noqa: E402
from glora.stages.train import train_supernet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.front")


def _config(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return OmegaConf.to_object(compose(name, overrides=overrides))


def supernet(work: Path, overrides: list[str]) -> Path:
    """The default supernet on the count task, trained once and reused."""
    run = work / "supernet"
    metrics = run / "metrics.json"
    if metrics.is_file() and json.loads(metrics.read_text()).get("complete"):
        return run
    tick = time.time()
    train_supernet(_config("train", ["data.task=count", *overrides]), run)
    log.info("supernet trained in %.0f s: %s", time.time() - tick, run)
    return run


def search(run: Path, sn: Path, overrides: list[str]) -> tuple[pd.DataFrame, float]:
    """One glora-search run: its history and its seconds (``metrics.json``'s, search
    alone). A finished run dir is read back, so a longer benchmark reuses shorter ones."""
    if not (run / "metrics.json").is_file():
        run_search(_config("search", [f"supernet={sn}", *overrides]), run)
    return pd.read_csv(run / "history.csv"), float(json.loads((run / "metrics.json").read_text())["seconds"])


def _points(history: pd.DataFrame) -> list[tuple[float, float]]:
    return list(zip(history["trainable_params"], history["val_acc"]))


def _mean_std(values: list[float], digits: int = 4) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def _label(share: float) -> str:
    return "front (NSGA-II)" if share == 0 else f"front aimed {share:g}"


def run_seed(seed: int, sn: Path, work: Path, args: argparse.Namespace) -> dict:
    """Every approach for one seed: per budget the best val acc, and their costs. A front
    search per ``--shares`` value (0: plain NSGA-II; s > 0: a share s of each generation
    aimed at the budgets, ``search.targets``), then one evolution per budget."""
    top = max(args.budgets)
    # deterministic names: a finished search of the same settings is reused
    stamp = f"seed{seed}-{args.population}x{{}}-b{'-'.join(map(str, args.budgets))}"
    out = {"seed": seed, "fronts": {}, "budgets": {b: {} for b in args.budgets}}
    for share in args.shares:
        front_run = work / f"pareto-{share:g}-{stamp.format(args.front_generations)}"
        aim = [f"search.targets=[{','.join(map(str, args.budgets))}]", f"search.target_share={share}"] if share else []
        history, seconds = search(front_run, sn, ["search=pareto", f"search.budget={top}", f"search.population={args.population}",
                                                  f"search.generations={args.front_generations}", f"search.seed={seed}", *aim])
        front = read_front(front_run)
        label = _label(share)
        out["fronts"][label] = {"front": front, "history": history, "s": seconds, "evals": len(history),
                                "hv": hypervolume(_points(history), ref_params=top)}
        for budget in args.budgets:
            point = best_under(front, budget, "budget")
            out["budgets"][budget][label] = (float(point["val_acc"]), int(point["trainable_params"]))
    evo = {"s": 0.0, "evals": 0, "points": []}
    for budget in args.budgets:
        history, seconds = search(work / f"evolution-{budget}-{stamp.format(args.evo_generations)}", sn, [
            "search=evolution", f"search.budget={budget}", f"search.population={args.population}",
            f"search.generations={args.evo_generations}", f"search.seed={seed}"])
        evo["s"] += seconds
        evo["evals"] += len(history)
        evo["points"] += _points(history)
        best = history.loc[history["val_acc"].idxmax()]
        out["budgets"][budget][EVO] = (float(best["val_acc"]), int(best["trainable_params"]))
    evo["hv"] = hypervolume(evo["points"], ref_params=top)
    out["evolution"] = evo
    log.info("seed %d: %s", seed, out["budgets"])
    return out


EVO = "evolution per budget"


def tables(results: list[dict], budgets: list[int]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per budget (mean ± std over seeds), the costs, and every seed's numbers."""
    labels = list(results[0]["fronts"])
    per_budget, raw = [], []
    for budget in budgets:
        row = {"budget": budget}
        evo = [r["budgets"][budget][EVO][0] for r in results]
        for label in labels:
            acc = [r["budgets"][budget][label][0] for r in results]
            row[f"{label}: best val under budget"] = _mean_std(acc)
            row[f"{label} − evolution"] = _mean_std([f - e for f, e in zip(acc, evo)])
        row[f"{EVO}: best val"] = _mean_std(evo)
        per_budget.append(row)
        raw += [{"seed": r["seed"], "budget": budget, **{f"{k} (val, params)": f"{v[0]:.4f}, {v[1]}" for k, v in r["budgets"][budget].items()}}
                for r in results]
    top = max(budgets)
    hv = f"hypervolume (ref {top} params)"
    costs = [{"approach": f"one {label} search, budget {top}", "searches": 1,
              "evaluations": _mean_std([r["fronts"][label]["evals"] for r in results], 0),
              "wall s": _mean_std([r["fronts"][label]["s"] for r in results], 1),
              hv: _mean_std([r["fronts"][label]["hv"] for r in results])} for label in labels]
    costs.append({"approach": f"one evolution per budget {budgets}", "searches": len(budgets),
                  "evaluations": _mean_std([r["evolution"]["evals"] for r in results], 0),
                  "wall s": _mean_std([r["evolution"]["s"] for r in results], 1),
                  hv: _mean_std([r["evolution"]["hv"] for r in results])})
    return pd.DataFrame(per_budget), pd.DataFrame(costs), pd.DataFrame(raw)


def plot(results: list[dict], budgets: list[int], path: Path):
    """Seed 0's every evaluated layout of the last front variant, each front variant's
    front (seed 0), and every approach's best under each budget (all seeds)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    first = results[0]
    labels = list(first["fronts"])
    history = first["fronts"][labels[-1]]["history"]
    ax.scatter(history["trainable_params"], history["val_acc"], s=8, alpha=0.25, color="grey",
               label=f"{labels[-1]}, seed {first['seed']}: evaluated")
    markers = "o^sv"
    for n, label in enumerate(labels):
        front = first["fronts"][label]["front"]
        ax.step(front["trainable_params"], front["val_acc"], where="post", color=f"C{3 + n}", alpha=0.8,
                label=f"front, seed {first['seed']}: {label}")
        xs = [r["budgets"][b][label][1] for r in results for b in budgets]
        ys = [r["budgets"][b][label][0] for r in results for b in budgets]
        ax.scatter(xs, ys, marker=markers[n % len(markers)], s=36, color=f"C{3 + n}", label=f"best under budget: {label}")
    xs = [r["budgets"][b][EVO][1] for r in results for b in budgets]
    ys = [r["budgets"][b][EVO][0] for r in results for b in budgets]
    ax.scatter(xs, ys, marker="x", s=40, color="C0", label=f"best under budget: {EVO}")
    for b in budgets:
        ax.axvline(b, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("trainable params (support tensors)")
    ax.set_ylabel("val accuracy (supernet, ranking images)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=int, nargs="+", default=None, help="default 4096 8192 16384 (--quick: 750 1500 3000)")
    parser.add_argument("--population", type=int, default=None, help="default 20 (--quick: 6)")
    parser.add_argument("--front-generations", type=int, default=None, help="default 9 (--quick: 6)")
    parser.add_argument("--evo-generations", type=int, default=None, help="default 3 (--quick: 2)")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.5],
                        help="front search variants: search.target_share (0: plain NSGA-II, no targets)")
    parser.add_argument("--work", default="runs/bench-front")
    parser.add_argument("--quick", action="store_true", help="experiment=smoke and small searches; results stay in --work")
    parser.add_argument("--overrides", nargs="*", default=[], help="extra supernet training overrides")
    args = parser.parse_args()
    quick = args.quick
    args.budgets = sorted(args.budgets or ([750, 1500, 3000] if quick else [4096, 8192, 16384]))
    args.population = args.population or (6 if quick else 20)
    args.front_generations = args.front_generations or (6 if quick else 9)
    args.evo_generations = args.evo_generations or (2 if quick else 3)
    work = Path(args.work) / ("quick" if quick else "default")
    overrides = ["experiment=smoke", *args.overrides] if quick else args.overrides
    started = time.time()
    sn = supernet(work, overrides)
    train_s = time.time() - started
    results = [run_seed(seed, sn, work, args) for seed in args.seeds]
    per_budget, costs, raw = tables(results, args.budgets)
    tag = machine_tag("cpu")
    out = (work if quick else ROOT / "benchmarks" / "results") / f"front-{tag}"
    drawn = plot(results, args.budgets, out.with_suffix(".png"))
    assert sum(k.startswith("front, seed") for k in next(iter(drawn.values()))) == len(args.shares), "the plot lacks a front"
    n_front = args.population * args.front_generations
    text = "\n".join([
        "# One front search vs one search per budget", "", f"Machine: {json.dumps(machine_info())}", "",
        f"`python benchmarks/front.py{' --quick' if quick else ''} --seeds {' '.join(map(str, args.seeds))} "
        f"--shares {' '.join(f'{x:g}' for x in args.shares)}`: the embedded "
        f"{'smoke' if quick else 'default'} supernet on `count` (trained once, {train_s:.0f} s incl. any cache hit), then per seed "
        f"(a) one `search=pareto` run under {max(args.budgets)} params ({args.population} x {args.front_generations} = {n_front} "
        f"evaluations) per front variant ({', '.join(_label(x) for x in args.shares)}; 'aimed s': `search.targets={args.budgets}`, "
        f"`search.target_share=s`) and (b) one `search=evolution` run per budget {args.budgets} ({args.population} x {args.evo_generations} "
        f"each, {len(args.budgets) * args.population * args.evo_generations} in all). Accuracy: the supernet's inherited val "
        "accuracy on the search's ranking images (what every search maximises); for (a) the best front point under each budget. "
        "Hypervolume: the area under each approach's evaluated layouts' staircase, params scaled by the largest budget "
        f"(`glora.search.pareto.hypervolume`). Mean ± std over {len(args.seeds)} seeds. {time.time() - started:.0f} s in all.", "",
        "## Best val accuracy under each budget", "", markdown_table(per_budget), "",
        "## Cost and coverage", "", markdown_table(costs), "",
        "## Every seed", "", markdown_table(raw), "",
        f"![fronts and per-budget bests]({out.with_suffix('.png').name})", "",
    ])
    write_text_atomic(out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
