"""Layout search on a trained supernet under a trainable-parameter budget: the strategy's
generations scored by the evaluator (split over ranks under torchrun), the state saved
after every generation so a killed search resumes, then history.csv, layout.json (the
best, glora-layout/1), metrics.json, report.md and plots in the run dir; a
multi-objective strategy (search=pareto) also writes its front (:mod:`.front`)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from glora.run import distributed
from glora.run.device import pick_device
from glora.run.errors import CheckpointError, JobError
from glora.run.io import atomic_write, write_json_atomic, write_text_atomic
from glora.search import Budget, Evaluator, LayoutOps, Record, SearchStrategy, run_generations, strategy_name, timed, top_k
from glora.search.plots import pareto_front, plot_layout_heatmap, plot_pareto, plot_search_curve
from glora.search.report import markdown_table
from glora.spaces import PRESETS, Layout, LayoutError, model_name, parse_option
from glora.training import predict

from .config import JobConfig
from .front import FRONT_CSV, write_front
from .handoff import Reranked
from .rerank import rerank, rerank_epochs
from .train import TrainedSupernet, load_trained

__all__ = ["STATE", "SearchJobConfig", "history_table", "run_search"]

log = logging.getLogger(__name__)

STATE = "search_state.json"


@dataclass
class SearchJobConfig(JobConfig):
    task_name: str = "search"
    supernet: Optional[str] = None  # a glora-train run dir
    resume: Optional[str] = None  # a glora-search run dir to continue
    search: SearchStrategy = field(default_factory=SearchStrategy)  # a strategy: search=evolution | random | optuna | pareto


def run_search(cfg: SearchJobConfig, run_dir: Path) -> dict:
    """Run (or resume) one search in ``run_dir``; returns its metrics."""
    s = cfg.search
    name = strategy_name(s)
    if cfg.resume and not (Path(cfg.resume) / STATE).is_file():
        log.warning("resume=%s holds no search state yet (the search ended in its first generation): starting over", cfg.resume)
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
    ops = LayoutOps(template, Budget(s.budget, s.min_params), s.max_tries)
    seeds = tuple(_seed_layers(path, supernet) for path in s.seed_layouts)
    evaluate = Evaluator(supernet.model, supernet.task.ranking_loader(), device, predict)
    identity = {"supernet": str(Path(cfg.supernet).resolve()), "strategy": name, "budget": s.budget,
                "min_params": s.min_params, "seed": s.seed, "space": supernet.space.to_dict(), **s.aim_identity()}

    records, start_gen = _resume(run_dir, identity)
    started = time.time()

    def save(generations_done: int, records: list[Record]) -> None:
        if distributed.is_main():
            _save_state(run_dir, identity, generations_done, records)

    records = run_generations(s, ops, distributed.split_over_ranks(timed(evaluate)), seeds, records, start_gen, save, distributed.is_main())
    reranked = rerank(run_dir, s, records, ops, supernet, identity) if s.rerank else None
    best = reranked.winner if reranked else top_k(records, 1)[0]
    if not distributed.is_main():  # every rank holds the same history; rank 0 writes it
        return {"best_val_acc": best.val_acc, "best_trainable_params": best.params, "best_layout_hash": best.hash, "evaluations": len(records)}
    return _write_outputs(run_dir, cfg, records, best, reranked, ops, supernet, time.time() - started)


def _seed_layers(path: str, supernet: TrainedSupernet) -> dict:
    """A user's layout JSON for the first population, checked against the supernet."""
    try:
        layout = Layout.load(path).check(supernet.space.target_layers(supernet.model), supernet.space, model_name(supernet.model))
    except LayoutError as err:
        raise LayoutError(f"search.seed_layouts: {err}") from None
    return layout.layers


def history_table(records: list[Record], strategy: str) -> pd.DataFrame:
    return pd.DataFrame(
        [{"generation": r.generation, "strategy": strategy, "layout_hash": r.hash, "trainable_params": r.params,
          "val_acc": r.val_acc, "seconds": r.seconds} for r in records]
    )


def _save_state(run_dir: Path, identity: dict, generations_done: int, records: list[Record]) -> None:
    rows = [{**asdict(r), "layers": {n: [str(o) for o in c] for n, c in r.layers.items()}} for r in records]
    table = history_table(records, identity["strategy"])
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


def _write_outputs(run_dir: Path, cfg: SearchJobConfig, records: list[Record], best: Record, reranked: Reranked | None, ops: LayoutOps,
                   supernet: TrainedSupernet, seconds: float) -> dict:
    name = strategy_name(cfg.search)
    history = history_table(records, name)
    tuned = reranked.tuned_lr if reranked else None  # a retrain takes the lr only when it was chosen from a grid (retrain.lr_from_search)
    layout = ops.layout(best.layers, metrics={"val_acc": best.val_acc, **({"standalone_val_acc": tuned.val_acc} if tuned else {})},
                        tuned_lr=tuned)
    layout.save(run_dir / "layout.json")
    plot_search_curve(history, run_dir / "search_curve.png")
    plot_pareto(history, run_dir / "pareto.png", cfg.search.budget)
    plot_layout_heatmap(layout, run_dir / "layout_heatmap.png")
    s = cfg.search
    on_front = write_front(run_dir, records, ops, s.budget, s.min_params, history) if s.multi_objective else {}
    metrics = {
        "strategy": name, "budget": cfg.search.budget, "min_params": cfg.search.min_params,
        "best_val_acc": best.val_acc, "best_trainable_params": best.params, "best_layout_hash": best.hash,
        "evaluations": len(records), "generations": cfg.search.generations, "seconds": round(seconds, 2),
        "supernet": str(Path(cfg.supernet).resolve()), "task": supernet.task.name, **on_front,
        **({"best_standalone_val_acc": tuned.val_acc, "best_standalone_lr": tuned.lr, "best_standalone_lrs": list(tuned.grid)} if tuned else {}),
        **({"reranked": reranked.table} if reranked else {}),
    }
    write_json_atomic(run_dir / "metrics.json", metrics)
    front = pareto_front(history)[["trainable_params", "val_acc", "layout_hash"]]
    top = history.sort_values(["val_acc", "trainable_params"], ascending=[False, True]).head(10)
    write_text_atomic(run_dir / "report.md", "\n".join([
        f"# Search report: {name} on `{supernet.task.name}`",
        "",
        f"Budget {cfg.search.budget:,} trainable params (min {cfg.search.min_params:,}); "
        f"{len(records)} layouts evaluated over {cfg.search.generations} generations in {seconds:.1f} s.",
        f"Best: `{best.hash}` with val accuracy {best.val_acc:.4f} at {best.params:,} params (`layout.json`).",
        *([f"Front: {on_front['front_size']} points in `{FRONT_CSV}` (each layout in `front/<params>.json`), hypervolume "
           f"{on_front['hypervolume']:.4f} (params scaled by the budget, accuracy above 0)."] if on_front else []),
        *(["", f"## Re-ranked by stand-alone training ({rerank_epochs(cfg.search, supernet)} epochs on train, "
             "accuracy on the ranking images at the best lr)", "",
            markdown_table(pd.DataFrame(reranked.table))] if reranked else []),
        "", "## Top layouts", "", markdown_table(top), "", "## Pareto front", "", markdown_table(front), "",
        "![best so far](search_curve.png)", "![accuracy vs params](pareto.png)", *(["![front](front.png)"] if on_front else []),
        "![layout](layout_heatmap.png)", "",
    ]))
    log.info("best layout %s: val acc %.4f at %d params (%d evaluations); files in %s", best.hash, best.val_acc, best.params, len(records), run_dir)
    return metrics
