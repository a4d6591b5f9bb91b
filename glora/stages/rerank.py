"""Re-ranking, a stage of its own after the search: the supernet's best few (and the
LoRA layouts that fit) each trained alone from the backbone and scored on the images the
search ranks on; the winner and the lr it won at (``TunedLr``) go to the retraining."""
from __future__ import annotations

import json
import logging
import random
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from glora.run import distributed
from glora.run.device import pick_device
from glora.run.errors import CheckpointError
from glora.run.io import write_json_atomic
from glora.search import Evaluator, LayoutOps, Record, SearchStrategy, timed, top_k
from glora.spaces import Layout, TunedLr
from glora.supernet import set_layout
from glora.training import fit, predict

from .handoff import Reranked
from .setup import wrapped_backbone
from .train import TrainedSupernet

__all__ = ["RERANK", "rerank", "rerank_candidates", "rerank_epochs", "rerank_grid", "rerank_key"]

log = logging.getLogger(__name__)

RERANK = "rerank_state.json"


def rerank_candidates(s: SearchStrategy, records: list[Record], ops: LayoutOps) -> list[Record]:
    """The ``s.rerank`` best by the supernet, then the evaluated LoRA layouts that fit."""
    chosen = top_k(records, s.rerank)
    lora = {ops.layout(layers).hash for layers in ops.lora_layouts(random.Random(s.seed)) if ops.legal(layers)}
    taken = {r.hash for r in chosen}
    return chosen + [r for r in records if r.hash in lora - taken]  # records hold each layout once


def rerank(run_dir: Path, s: SearchStrategy, records: list[Record], ops: LayoutOps, supernet: TrainedSupernet,
           identity: dict) -> Reranked:
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

    score = distributed.split_over_ranks(timed(standalone))
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
    best = max(range(len(candidates)), key=lambda i: (table[i]["standalone_val_acc"], -candidates[i].params))  # ties: fewer params
    winner, row = candidates[best], table[best]
    log.info("re-ranked %d layouts by stand-alone training at lr %s: %s wins (val %.4f; the supernet's first: %s, %.4f)",
             len(candidates), lrs, winner.hash, row["standalone_val_acc"], candidates[0].hash, table[0]["standalone_val_acc"])
    return Reranked(winner, table, TunedLr(row["standalone_lr"], tuple(lrs), row["standalone_val_acc"]))


def rerank_grid(s: SearchStrategy, supernet: TrainedSupernet) -> list[float]:
    """The lrs the re-ranking trains each candidate at: ``s.rerank_lrs``, else the supernet's."""
    return [float(lr) for lr in s.rerank_lrs] or [float(supernet.config.optim.lr)]


def rerank_epochs(s: SearchStrategy, supernet: TrainedSupernet) -> int:
    """How long each re-ranking run trains: ``s.rerank_epochs``, else the supernet's epochs."""
    return s.rerank_epochs or supernet.config.trainer.epochs


def rerank_key(layout_hash: str, lr: float) -> str:
    """One re-ranking run's key in ``rerank_state.json``."""
    return f"{layout_hash}@{lr:g}"
