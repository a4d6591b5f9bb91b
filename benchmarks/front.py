"""One front search against one search per budget. At equal total evaluations, is the
front search's best layout under each budget as good as a single-budget evolution at that
budget, and does it cost one search instead of three? On the embedded default supernet
(trained once, cached in ``--work``), for each seed: (a) one ``search=pareto`` search under
the largest budget, (b) one ``search=evolution`` search per budget, their evaluations
adding up to (a)'s. Both through ``run_search`` (what ``glora-search`` runs). Writes
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
from omegaconf import OmegaConf  # noqa: E402

from machine import machine_info, machine_tag  # noqa: E402

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
    """One glora-search run (fresh dir): its history and its wall time."""
    tick = time.time()
    run_search(_config("search", [f"supernet={sn}", *overrides]), run)
    return pd.read_csv(run / "history.csv"), time.time() - tick


def _points(history: pd.DataFrame) -> list[tuple[float, float]]:
    return list(zip(history["trainable_params"], history["val_acc"]))


def _mean_std(values: list[float], digits: int = 4) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def run_seed(seed: int, sn: Path, work: Path, args: argparse.Namespace) -> dict:
    """Both approaches for one seed: per budget the best val acc, and their costs."""
    top = max(args.budgets)
    stamp = f"seed{seed}-{int(time.time())}"
    front_run = work / f"pareto-{stamp}"
    history, front_s = search(front_run, sn, ["search=pareto", f"search.budget={top}", f"search.population={args.population}",
                                              f"search.generations={args.front_generations}", f"search.seed={seed}"])
    front = read_front(front_run)
    out = {"seed": seed, "front_run": front_run, "front": front, "front_history": history, "front_s": front_s,
           "front_evals": len(history), "front_hv": hypervolume(_points(history), ref_params=top), "evo_s": 0.0, "evo_evals": 0,
           "evo_points": [], "budgets": {}}
    for budget in args.budgets:
        evo, seconds = search(work / f"evolution-{budget}-{stamp}", sn, [
            "search=evolution", f"search.budget={budget}", f"search.population={args.population}",
            f"search.generations={args.evo_generations}", f"search.seed={seed}"])
        out["evo_s"] += seconds
        out["evo_evals"] += len(evo)
        out["evo_points"] += _points(evo)
        point = best_under(front, budget, "budget")
        out["budgets"][budget] = {"front": float(point["val_acc"]), "front_params": int(point["trainable_params"]),
                                  "evolution": float(evo["val_acc"].max()),
                                  "evolution_params": int(evo.loc[evo["val_acc"].idxmax(), "trainable_params"])}
    out["evo_hv"] = hypervolume(out["evo_points"], ref_params=top)
    log.info("seed %d: %s", seed, {b: (v["front"], v["evolution"]) for b, v in out["budgets"].items()})
    return out


def tables(results: list[dict], budgets: list[int]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per budget (mean ± std over seeds), the costs, and every seed's numbers."""
    per_budget, raw = [], []
    for budget in budgets:
        front = [r["budgets"][budget]["front"] for r in results]
        evo = [r["budgets"][budget]["evolution"] for r in results]
        per_budget.append({"budget": budget, "front search: best val under budget": _mean_std(front),
                           "evolution at budget: best val": _mean_std(evo),
                           "front − evolution": _mean_std([f - e for f, e in zip(front, evo)])})
        raw += [{"seed": r["seed"], "budget": budget, **r["budgets"][budget]} for r in results]
    top = max(budgets)
    costs = pd.DataFrame([
        {"approach": f"one front search (pareto, budget {top})", "searches": 1,
         "evaluations": _mean_std([r["front_evals"] for r in results], 0), "wall s": _mean_std([r["front_s"] for r in results], 1),
         f"hypervolume (ref {top} params)": _mean_std([r["front_hv"] for r in results])},
        {"approach": f"one evolution per budget {budgets}", "searches": len(budgets),
         "evaluations": _mean_std([r["evo_evals"] for r in results], 0), "wall s": _mean_std([r["evo_s"] for r in results], 1),
         f"hypervolume (ref {top} params)": _mean_std([r["evo_hv"] for r in results])},
    ])
    return pd.DataFrame(per_budget), costs, pd.DataFrame(raw)


def plot(results: list[dict], budgets: list[int], path: Path):
    """Seed 0's every evaluated layout, each seed's front, and both approaches' best under each budget."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    first = results[0]["front_history"]
    ax.scatter(first["trainable_params"], first["val_acc"], s=8, alpha=0.25, color="grey", label=f"front search, seed {results[0]['seed']}: evaluated")
    for n, r in enumerate(results):
        ax.step(r["front"]["trainable_params"], r["front"]["val_acc"], where="post", color=f"C{3 + n}", alpha=0.7, label=f"front, seed {r['seed']}")
    for key, marker, color in (("front", "o", "C3"), ("evolution", "x", "C0")):
        xs = [r["budgets"][b][f"{key}_params"] for r in results for b in budgets]
        ys = [r["budgets"][b][key] for r in results for b in budgets]
        ax.scatter(xs, ys, marker=marker, s=40, color=color, label=f"best under budget: {key}")
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
    assert any(k.startswith("front, seed") for k in next(iter(drawn.values()))), "the plot drew no front"
    n_front = args.population * args.front_generations
    text = "\n".join([
        "# One front search vs one search per budget", "", f"Machine: {json.dumps(machine_info())}", "",
        f"`python benchmarks/front.py{' --quick' if quick else ''} --seeds {' '.join(map(str, args.seeds))}`: the embedded "
        f"{'smoke' if quick else 'default'} supernet on `count` (trained once, {train_s:.0f} s incl. any cache hit), then per seed "
        f"(a) one `search=pareto` run under {max(args.budgets)} params ({args.population} x {args.front_generations} = {n_front} "
        f"evaluations) and (b) one `search=evolution` run per budget {args.budgets} ({args.population} x {args.evo_generations} "
        f"each, {len(args.budgets) * args.population * args.evo_generations} in all). Accuracy: the supernet's inherited val "
        "accuracy on the search's ranking images (what either search maximises); for (a) the best front point under each budget. "
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
