"""Layout search on a trained supernet under a trainable-parameter budget: the strategy's
generations scored by the evaluator (split over ranks under torchrun), the state saved
after every generation so a killed search resumes, then history.csv, layout.json (the
best, glora-layout/1), metrics.json, report.md and plots in the run dir; a
multi-objective strategy (search=pareto) also writes its front (:mod:`.front`)."""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import pandas as pd
from tqdm import tqdm

from glora.run import distributed
from glora.run.device import pick_device
from glora.run.errors import CheckpointError, JobError
from glora.run.io import atomic_write, write_json_atomic, write_text_atomic
from glora.search import Budget, Evaluator, LayoutOps, Record, SearchStrategy, run_generations, strategy_name, timed, top_k
from glora.search.plots import pareto_front, plot_layout_heatmap, plot_pareto, plot_search_curve
from glora.search.report import markdown_table
from glora.spaces import PRESETS, Layout, LayoutError, model_name, parse_option
from glora.supernet import set_layout
from glora.training import fit, predict

from .config import JobConfig
from .front import FRONT_CSV, write_front
from .setup import wrapped_backbone
from .train import TrainedSupernet, load_trained

__all__ = ["RERANK", "STATE", "SearchJobConfig", "rerank_candidates", "rerank_key", "run_search"]

log = logging.getLogger(__name__)

STATE = "search_state.json"
RERANK = "rerank_state.json"


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

    records = run_generations(s, ops, _split_over_ranks(timed(evaluate)), seeds, records, start_gen, save, distributed.is_main())
    best, reranked = top_k(records, 1)[0], []
    if s.rerank:
        best, reranked = _rerank(run_dir, s, records, ops, supernet, identity)
    if not distributed.is_main():  # every rank holds the same history; rank 0 writes it
        return {"best_val_acc": best.val_acc, "best_trainable_params": best.params, "best_layout_hash": best.hash, "evaluations": len(records)}
    return _write_outputs(run_dir, cfg, records, best, reranked, ops, supernet, time.time() - started)


def _split_over_ranks(score):
    """Under torchrun rank r scores layouts r, r + N, ... and the scores are gathered, so
    every rank ends with the same list and the search does not depend on the number of
    processes."""

    def split(layouts: list[Layout]) -> list[tuple[float, float]]:
        rank, world = distributed.rank(), distributed.world_size()
        gathered = distributed.gather_lists(score(layouts[rank::world]))
        return [gathered[i % world][i // world] for i in range(len(layouts))]

    return split


def rerank_candidates(s: SearchStrategy, records: list[Record], ops: LayoutOps) -> list[Record]:
    """The ``s.rerank`` best by the supernet, then the evaluated LoRA layouts that fit."""
    chosen = top_k(records, s.rerank)
    lora = {ops.layout(layers).hash for layers in ops.lora_layouts(random.Random(s.seed)) if ops.legal(layers)}
    taken = {r.hash for r in chosen}
    return chosen + [r for r in records if r.hash in lora - taken]  # records hold each layout once


def _rerank(run_dir: Path, s: SearchStrategy, records: list[Record], ops: LayoutOps, supernet: TrainedSupernet,
            identity: dict) -> tuple[Record, list[dict]]:
    """Train each candidate alone from the backbone on train (the supernet's recipe, for
    ``s.rerank_epochs``, at each lr of ``s.rerank_lrs``) and score it on the images the
    search ranks on (val, plus ``data.rank_images``: 200 val images alone have a standard
    error of ~3 points, more than the gaps between the candidates); a candidate scores at
    its best lr and the best wins (ties: fewer params). At one lr the layouts that learn
    fastest there win, not the best: at 1e-3 the LoRA layouts reach a fraction of what they
    reach at 1e-2. Scores are saved after each round, so a killed search resumes here too;
    under torchrun the (layout, lr) runs are split over ranks."""
    candidates = rerank_candidates(s, records, ops)
    base = supernet.config
    trainer = replace(base.trainer, epochs=rerank_epochs(s, supernet), max_steps=None)
    lrs = rerank_grid(s, supernet)
    # earlier states scored on val alone, or keyed by layout alone
    identity = {**identity, "rerank_scored_on": "ranking images", "rerank_epochs": trainer.epochs, "rerank_keys": "layout@lr"}
    path, done = run_dir / RERANK, {}
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            done = saved["val_acc"] if saved["identity"] == identity else {}
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path} is corrupt ({err}); delete it to re-run the re-ranking") from None

    def standalone(run: tuple[Layout, float]) -> float:
        layout, lr = run
        model, _, task = wrapped_backbone(replace(base, trainer=trainer), supernet.space)
        set_layout(model, layout)
        optim = replace(base.optim, lr=lr)
        fit(model, task, optim, trainer, ("train", "val"), local=True, groups=optim.groups(model))
        return Evaluator(model, task.ranking_loader(), pick_device(trainer.device), predict)(layout)

    score = _split_over_ranks(timed(standalone))
    todo = [(r, lr) for r in candidates for lr in lrs if rerank_key(r.hash, lr) not in done]
    world = distributed.world_size()
    for start in tqdm(range(0, len(todo), world), desc="re-rank", disable=not distributed.is_main() or not todo):
        chunk = todo[start:start + world]
        for (record, lr), (acc, _) in zip(chunk, score([(ops.layout(r.layers), lr) for r, lr in chunk])):
            done[rerank_key(record.hash, lr)] = acc
        if distributed.is_main():
            write_json_atomic(path, {"identity": identity, "val_acc": done})
    table = []
    for r in candidates:
        by_lr = {lr: done[rerank_key(r.hash, lr)] for lr in lrs}
        lr = max(lrs, key=lambda x: (by_lr[x], -x))  # a tie goes to the smaller lr
        table.append({"layout_hash": r.hash, "trainable_params": r.params, "supernet_val_acc": r.val_acc,
                      "standalone_val_acc": by_lr[lr], "standalone_lr": lr,
                      **({f"val_acc_lr{x:g}": by_lr[x] for x in lrs} if len(lrs) > 1 else {})})
    scores = {row["layout_hash"]: row["standalone_val_acc"] for row in table}
    winner = max(candidates, key=lambda r: (scores[r.hash], -r.params))
    log.info("re-ranked %d layouts by stand-alone training at lr %s: %s wins (val %.4f; the supernet's first: %s, %.4f)",
             len(candidates), lrs, winner.hash, scores[winner.hash], candidates[0].hash, scores[candidates[0].hash])
    return winner, table


def rerank_grid(s: SearchStrategy, supernet: TrainedSupernet) -> list[float]:
    """The lrs the re-ranking trains each candidate at: ``s.rerank_lrs``, else the supernet's."""
    return [float(lr) for lr in s.rerank_lrs] or [float(supernet.config.optim.lr)]


def rerank_epochs(s: SearchStrategy, supernet: TrainedSupernet) -> int:
    """How long each re-ranking run trains: ``s.rerank_epochs``, else the supernet's epochs."""
    return s.rerank_epochs or supernet.config.trainer.epochs


def rerank_key(layout_hash: str, lr: float) -> str:
    """One re-ranking run's key in ``rerank_state.json``."""
    return f"{layout_hash}@{lr:g}"


def _seed_layers(path: str, supernet: TrainedSupernet) -> dict:
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


def _write_outputs(run_dir: Path, cfg: SearchJobConfig, records: list[Record], best: Record, reranked: list[dict], ops: LayoutOps,
                   supernet: TrainedSupernet, seconds: float) -> dict:
    name = strategy_name(cfg.search)
    history = _history(records, name)
    row = next((r for r in reranked if r["layout_hash"] == best.hash), {})  # the winner's re-ranking row
    won = {key: row[key] for key in ("standalone_val_acc", "standalone_lr") if key in row}
    if won:  # the lrs it chose among: a retrain takes the choice only from a grid (retrain.lr_from_search)
        won["standalone_lrs"] = rerank_grid(cfg.search, supernet)
    layout = ops.layout(best.layers, metrics={"val_acc": best.val_acc, **won})
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
        **({f"best_{k}": v for k, v in won.items()}), **({"reranked": reranked} if reranked else {}),
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
            markdown_table(pd.DataFrame(reranked))] if reranked else []),
        "", "## Top layouts", "", markdown_table(top), "", "## Pareto front", "", markdown_table(front), "",
        "![best so far](search_curve.png)", "![accuracy vs params](pareto.png)", *(["![front](front.png)"] if on_front else []),
        "![layout](layout_heatmap.png)", "",
    ]))
    log.info("best layout %s: val acc %.4f at %d params (%d evaluations); files in %s", best.hash, best.val_acc, best.params, len(records), run_dir)
    return metrics
