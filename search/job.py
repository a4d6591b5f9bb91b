"""`glora-search`: search per-layer A–E layouts of a trained supernet under a budget.

    glora-search supernet=runs/train/<time> search.budget=20000
    glora-search supernet=... search.strategy=random          # or optuna; same evaluator and budget
    glora-search --multirun supernet=... search.budget=5e3,1e4,2e4   # a budget sweep
    glora-search resume=runs/search/<time>                     # continue a killed search
    glora-search experiment=smoke supernet=...

Writes history.csv (one row per evaluated layout), layout.json (the best, glora-layout/1),
metrics.json, report.md and plots into the run dir; its state after every generation.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import hydra
import pandas as pd
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig
from tqdm import tqdm

from spaces import (
    PRESETS,
    Layout,
    LayoutError,
    model_name,
    parse_option,
    write_json_atomic,
)
from supernet import distributed
from supernet.checkpoint import atomic_write
from supernet.engine import TrainerConfig, pick_device
from supernet.errors import CheckpointError, JobError
from supernet.jobs import CONF_DIR, PathsConfig, run_job
from supernet.train import load_trained

from . import evolution, optuna_search, random_search  # noqa: F401  (register the strategies)
from .evaluator import Evaluator
from .operators import Budget, LayoutOps
from .plots import pareto_front, plot_layout_heatmap, plot_pareto, plot_search_curve
from .report import markdown_table
from .strategy import Record, get_strategy, top_k

log = logging.getLogger(__name__)

STATE = "search_state.json"


@dataclass
class SearchConfig:
    strategy: str = "evolution"  # evolution | random | optuna
    budget: float = 20000  # max trainable params of the support tensors (the head is apart)
    min_params: float = 0
    population: int = 50
    top_k: int = 10
    generations: int = 20
    crossover: int = 25
    mutation: int = 25
    mutation_prob: float = 0.2
    max_tries: int = 50  # re-draws of an illegal child before it is repaired to the budget
    seed: int = 0
    seed_layouts: list[str] = field(default_factory=list)  # layout JSON files for the first population
    space: Optional[str] = None  # expected space preset of the supernet (checked)


@dataclass
class SearchJobConfig:
    task_name: str = "search"
    supernet: Optional[str] = None  # a glora-train run dir
    resume: Optional[str] = None  # a glora-search run dir to continue
    search: SearchConfig = field(default_factory=SearchConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # its device
    paths: PathsConfig = field(default_factory=PathsConfig)


def run_search(cfg: SearchJobConfig, run_dir: Path) -> dict:
    """Run (or resume) one search in ``run_dir``; returns its metrics."""
    s = cfg.search
    if cfg.resume and not (Path(cfg.resume) / STATE).is_file():
        raise CheckpointError(f"resume={cfg.resume!r} holds no {STATE}: nothing to resume from")
    if not cfg.supernet:
        raise JobError("supernet is not set; point it at a glora-train run dir: glora-search supernet=runs/train/<time>")
    device = pick_device(cfg.trainer.device)
    supernet = load_trained(cfg.supernet, device)
    if s.space is not None and tuple(PRESETS.get(s.space, ())) != supernet.space.ranks:
        raise CheckpointError(
            f"supernet {cfg.supernet!r} was trained with space ranks {list(supernet.space.ranks)}, but search.space={s.space!r}; "
            "point at a supernet of that space or drop search.space"
        )
    template = Layout.sample(supernet.model, supernet.space, seed=0)
    ops = LayoutOps(template, Budget(int(s.budget), int(s.min_params)), s.max_tries)
    seeds = tuple(_seed_layers(path, supernet) for path in s.seed_layouts)
    strategy = get_strategy(s.strategy, **asdict(s), seed_layers=seeds)
    evaluate = Evaluator(supernet, device)
    identity = {"supernet": str(Path(cfg.supernet).resolve()), "strategy": s.strategy, "budget": int(s.budget),
                "min_params": int(s.min_params), "seed": s.seed, "space": supernet.space.to_dict()}

    records, start_gen = _resume(run_dir, identity)
    seen = {r.hash: r for r in records}
    started = time.time()
    bar = tqdm(range(start_gen, s.generations), desc=f"search ({s.strategy})", unit="gen", initial=start_gen, total=s.generations, dynamic_ncols=True,
               disable=not distributed.is_main())
    for generation in bar:
        rng = random.Random(s.seed * 100_003 + generation)
        fresh: dict[str, Layout] = {}  # never evaluate a layout twice
        for layers in strategy.propose(generation, records, ops, rng):
            layout = ops.layout(layers)
            if layout.hash not in seen and layout.hash not in fresh:
                fresh[layout.hash] = layout
        for layout, (acc, seconds) in zip(fresh.values(), _evaluate_split(evaluate, list(fresh.values()))):
            record = Record(generation, layout.hash, layout.layers, layout.trainable_params, acc, seconds)
            records.append(record)
            seen[record.hash] = record
        best = top_k(records, 1)[0]
        bar.set_postfix(best=f"{best.val_acc:.3f}", params=best.params, evals=len(records))
        if distributed.is_main():
            _save_state(run_dir, identity, generation + 1, records)

    if not distributed.is_main():  # every rank holds the same history; rank 0 writes it
        best = top_k(records, 1)[0]
        return {"best_val_acc": best.val_acc, "best_trainable_params": best.params, "best_layout_hash": best.hash, "evaluations": len(records)}
    return _write_outputs(run_dir, cfg, records, ops, supernet, time.time() - started)


def _evaluate_split(evaluate: Evaluator, layouts: list[Layout]) -> list[tuple[float, float]]:
    """(val acc, seconds) of every layout, in order. Under torchrun rank r scores layouts
    r, r + N, ... and the scores are gathered, so every rank ends with the same list and the
    search does not depend on the number of processes."""
    rank, world = distributed.rank(), distributed.world_size()
    mine = []
    for layout in layouts[rank::world]:
        tick = time.time()
        mine.append((evaluate(layout), round(time.time() - tick, 4)))
    gathered = distributed.gather_lists(mine)
    return [gathered[i % world][i // world] for i in range(len(layouts))]


def _seed_layers(path: str, supernet) -> dict:
    """A user's layout JSON for the first population, checked against the supernet."""
    try:
        layout = Layout.load(path).check(supernet.space.target_layers(supernet.model), supernet.space, model_name(supernet.model))
    except LayoutError as err:
        raise LayoutError(f"search.seed_layouts: {err}") from None
    return layout.layers


def _history(records: list[Record], strategy: str) -> pd.DataFrame:
    return pd.DataFrame(
        [{"generation": r.generation, "strategy": strategy, "layout_hash": r.hash, "trainable_params": r.params,
          "val_acc": r.val_acc, "seconds": r.seconds} for r in records]
    )


def _save_state(run_dir: Path, identity: dict, generations_done: int, records: list[Record]) -> None:
    rows = [{**asdict(r), "layers": {n: [str(o) for o in c] for n, c in r.layers.items()}} for r in records]
    table = _history(records, identity["strategy"])
    atomic_write(run_dir / "history.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_json_atomic(run_dir / STATE, {"identity": identity, "generations_done": generations_done, "records": rows})


def _resume(run_dir: Path, identity: dict) -> tuple[list[Record], int]:
    path = run_dir / STATE
    if not path.is_file():
        return [], 0
    try:
        saved = json.loads(path.read_text())
        if saved["identity"] != identity:
            raise CheckpointError(
                f"{path} belongs to another search ({saved['identity']}); this one is {identity}: start a new run dir"
            )
        records = [
            Record(r["generation"], r["hash"], {n: tuple(parse_option(o) for o in c) for n, c in r["layers"].items()},
                   r["params"], r["val_acc"], r["seconds"])
            for r in saved["records"]
        ]
        log.info("resuming search from generation %d (%d layouts evaluated)", saved["generations_done"], len(records))
        return records, int(saved["generations_done"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is corrupt ({err}); cannot resume") from None


def _write_outputs(run_dir: Path, cfg: SearchJobConfig, records: list[Record], ops: LayoutOps, supernet, seconds: float) -> dict:
    history = _history(records, cfg.search.strategy)
    best = top_k(records, 1)[0]
    layout = ops.layout(best.layers, metrics={"val_acc": best.val_acc})
    layout.save(run_dir / "layout.json")
    plot_search_curve(history, run_dir / "search_curve.png")
    plot_pareto(history, run_dir / "pareto.png", int(cfg.search.budget))
    plot_layout_heatmap(layout, run_dir / "layout_heatmap.png")
    metrics = {
        "strategy": cfg.search.strategy, "budget": int(cfg.search.budget), "min_params": int(cfg.search.min_params),
        "best_val_acc": best.val_acc, "best_trainable_params": best.params, "best_layout_hash": best.hash,
        "evaluations": len(records), "generations": cfg.search.generations, "seconds": round(seconds, 2),
        "supernet": str(Path(cfg.supernet).resolve()), "task": supernet.task.name,
    }
    write_json_atomic(run_dir / "metrics.json", metrics)
    front = pareto_front(history)[["trainable_params", "val_acc", "layout_hash"]]
    top = history.sort_values(["val_acc", "trainable_params"], ascending=[False, True]).head(10)
    report = "\n".join([
        f"# Search report: {cfg.search.strategy} on `{supernet.task.name}`",
        "",
        f"Budget {int(cfg.search.budget):,} trainable params (min {int(cfg.search.min_params):,}); "
        f"{len(records)} layouts evaluated over {cfg.search.generations} generations in {seconds:.1f} s.",
        f"Best: `{best.hash}` with val accuracy {best.val_acc:.4f} at {best.params:,} params (`layout.json`).",
        "", "## Top layouts", "", markdown_table(top), "", "## Pareto front", "", markdown_table(front), "",
        "![best so far](search_curve.png)", "![accuracy vs params](pareto.png)", "![layout](layout_heatmap.png)", "",
    ])
    atomic_write(run_dir / "report.md", lambda tmp: Path(tmp).write_text(report))
    log.info("best layout %s: val acc %.4f at %d params (%d evaluations)", best.hash, best.val_acc, best.params, len(records))
    return metrics


ConfigStore.instance().store(name="search_schema", node=SearchJobConfig)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="search")
def hydra_main(cfg: DictConfig) -> float:
    return run_job(run_search, cfg)["best_val_acc"]


main = distributed.entry_point(hydra_main)  # the console script: torchrun-aware
