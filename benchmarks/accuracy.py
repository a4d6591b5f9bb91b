#!/usr/bin/env python
"""Accuracy on the embedded suite: searched GLoRA against the baselines people would try.

Every method starts from the same pretrained backbone, gets a fresh head seeded the same
way, and is trained with the same loop (``glora.training.fit``), optimiser, schedule and
epochs. Tuned protocol, the same for every method: each value of its family's grid trains
on train (800) and is scored on val (200) with seed 0; the best val accuracy picks it; then
train+val is trained with that value for every seed and the final epoch's test accuracy is
reported (test is never used to choose anything). Methods:

* ``probe``            head only (backbone frozen), trained by the loop like the rest;
* ``probe_logreg``     a logistic regression on the frozen pre-logit features, C chosen on
                       val from a C grid, refit on train+val (``glora.probe.probe_grid``);
                       deterministic given the data: one fit, reported as a row per seed;
* ``full_ft``          every parameter (with a plan: its own lr grid and warm-up);
* ``lora_r{1,2,4,8}``  PEFT's LoRA (library defaults: alpha 8, no dropout) on the layers
                       GLoRA targets (every block's qkv / proj / fc1 / fc2);
* ``lora_r{1,2,4,8}_alpha_r``  the same at alpha = r (r=8 repeats lora_r8);
* ``peft_glora_r2``    PEFT's own GLoRA, one uniform config for every targeted layer:
                       its defaults (A, B, C LoRA; D, E constant) at r=2 (other ranks with
                       ``--peft-glora-ranks 2 8`` or in a plan);
* ``glora_lora_r{1,2,4,8}``  this project's GLoRA with the LoRA layout (B = ``LoRA_r`` on
                       every targeted layer, the rest ``none``; its init, no alpha scale):
                       the layout the search always weighs, at the ranks the space has;
* ``glora_random_<b>`` this project's GLoRA with a random legal layout of 90–100% of
                       budget ``b`` (drawn per seed);
* ``glora_search_<b>_s<k>``  (plans) the layout independent search ``k`` finds under
                       budget ``b``: its own supernet (trainer.seed=k) on train in
                       ``work/<task>/supernet-s<k>``, its own evolutionary search
                       (search.seed=k) ranked on val in ``search-<b>-s<k>``; retrained per seed;
* ``glora_search_<b>`` (flags) one such search with seed 0, in ``supernet`` / ``search-<b>``.

A plan (``--plan benchmarks/plans/<name>.yaml``, see ``benchmarks/plan.py``) pre-registers
a run: tasks, budgets, methods, grids, seeds, searches. The run keeps a copy of it in its
work dir; ``--report`` refuses (one line, exit code 2) when the plan file changed since or
the rows differ from the plan's cells, and its table pairs searched GLoRA with each rival
family over (task, seed) with a paired t-test and a Wilcoxon test (``benchmarks/stats.py``).

Trainable parameters are reported as ``adapter_params`` (support tensors / LoRA factors /
the backbone for full_ft) and ``head_params`` apart. Every run lives in its own folder under
``--work`` and resumes from its checkpoint, so an interrupted benchmark continues.

    .venv/bin/pip install -e ".[bench]"
    # a pre-registered run: one process per task (2-core machines run them side by side), then one table:
    for t in count orientation texture; do OMP_NUM_THREADS=1 .venv/bin/python benchmarks/accuracy.py \
        --plan benchmarks/plans/embedded-headline.yaml --tasks $t --no-report & done; wait
    .venv/bin/python benchmarks/accuracy.py --plan benchmarks/plans/embedded-headline.yaml --report
    # the flag interface (exploration, never a headline table):
    .venv/bin/python benchmarks/accuracy.py --epochs 10                # 3 tasks x 3 seeds
    .venv/bin/python benchmarks/accuracy.py --tasks count --seeds 1 --epochs 2 --lrs 1e-3 --quick
    for t in count orientation texture; do OMP_NUM_THREADS=1 .venv/bin/python benchmarks/accuracy.py --epochs 10 --tasks $t --no-report & done; wait
    .venv/bin/python benchmarks/accuracy.py --epochs 10 --report
    # the real backbone (DINOv2 ViT-S/14) on 2 CPU cores at 56 px, one process per task, then --report:
    .venv/bin/python benchmarks/accuracy.py --tasks mnist --budgets 73728 --lrs 1e-3 1e-2 --epochs 3 --supernet-epochs 5 \
        --no-report --name real-cpu --work runs/bench-accuracy-real experiment=real_cpu data.rank_images=300 \
        --methods glora_search_73728 lora_r1 glora_random_73728 peft_glora_r2 probe full_ft
    # ... and on a GPU at 224 px:
    .venv/bin/python benchmarks/accuracy.py --tasks mnist elpv --budgets 73728 294912 --name real-224 experiment=real_gpu  # LoRA r=1, r=4 of ViT-S

Writes benchmarks/results/accuracy-<plan name | --name | device>.{md,csv,png} (``-quick`` for --quick).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import math
import random
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import plan as plans
from machine import machine_info, machine_tag
from plan import LORA_RANKS, Plan, PlanError
from stats import ALPHA, WILCOXON_MIN_PAIRS, paired_tests

from glora.backbones import EMBEDDED, classifier_name, load_backbone
from glora.backbones.embedded import ensure_embedded_backbone
from glora.data import build_task
from glora.jobs.app import CONF_DIR  # registers the config schemas
from glora.probe import probe_grid
from glora.run.device import pick_device
from glora.run.errors import JobError
from glora.run.io import write_json_atomic, write_text_atomic
from glora.search import Budget, LayoutOps, strategy_name
from glora.search.report import markdown_table
from glora.spaces import DEFAULT_TARGETS, Layout
from glora.stages.config import narrow
from glora.stages.export import write_plain_model
from glora.stages.search import SearchJobConfig, run_search
from glora.stages.setup import space_for
from glora.stages.train import TrainJobConfig as TrainConfig
from glora.stages.train import train_supernet
from glora.supernet import GLoRAConfig, is_wrapped, merge, set_layout, wrap
from glora.training import evaluate, fit

log = logging.getLogger("accuracy")

ALPHA_R_RANKS = LORA_RANKS  # LoRA at alpha = r too (r=8 repeats alpha 8)
DEFAULT_LRS = (1e-3, 3e-3, 1e-2)
DEFAULT_CS = (0.01, 0.1, 1.0, 10.0, 100.0)
DEFAULT_BUDGETS = (4096, 16384)  # LoRA r=1 and r=4 on the embedded backbone's targets
DEFAULT_SEEDS = 3


# ---- methods: each turns a backbone with a fresh head into the model to train ----------------
def head_only(model: torch.nn.Module) -> torch.nn.Module:
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(classifier_name(model) + "."))
    return model


def full_ft(model: torch.nn.Module) -> torch.nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def peft_model(model: torch.nn.Module, config) -> torch.nn.Module:
    """PEFT's adapter around the timm model; the head trains as well (as in every method)."""
    import peft

    head = classifier_name(model)
    wrapped = peft.get_peft_model(model, config)
    for p in model.get_submodule(head).parameters():
        p.requires_grad_(True)
    return wrapped


def peft_lora(rank: int, alpha: int = 8):
    def build(model: torch.nn.Module) -> torch.nn.Module:
        import peft

        return peft_model(model, peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=DEFAULT_TARGETS))

    return build


def peft_glora(rank: int):
    def build(model: torch.nn.Module) -> torch.nn.Module:
        import peft

        return peft_model(model, peft.GloraConfig(r=rank, target_modules=DEFAULT_TARGETS))

    return build


def glora_layout(layout_for, seed: int, glora: GLoRAConfig):
    """This project's GLoRA with the fixed layout ``layout_for(model)``."""

    def build(model: torch.nn.Module) -> torch.nn.Module:
        layout = layout_for(model)
        wrap(model, layout.space, seed=seed, modules_to_train=(classifier_name(model),), up_init=glora.up_init, vector_b=glora.vector_b)
        set_layout(model, layout)
        model.adapter_params = layout.trainable_params  # the supernet's tensors are stored at max rank
        return model

    return build


def lora_layout(space, rank: int):
    """GLoRA's LoRA layout: B = ``LoRA_rank`` on every targeted layer, the rest ``none``."""
    return lambda model: Layout.uniform(model, space, B=f"LoRA_{rank}")


def random_layout(space, budget: int, seed: int):
    def draw(model: torch.nn.Module) -> Layout:
        template = Layout.sample(model, space, seed=0)
        ops = LayoutOps(template, Budget(budget, int(0.9 * budget)))
        return ops.layout(ops.random(random.Random(seed)))

    return draw


# ---- what one benchmark run does: from a plan, or from the flags -------------------------------
@dataclass
class Setup:
    tasks: list[str]  # the table's tasks
    run_tasks: list[str]  # the tasks this process runs (--tasks)
    budgets: list[int]
    seeds: int
    methods: list[str]  # resolved names, in run order
    grids: dict[str, list[float]]  # per method the grid its lr (probe_logreg: its C) is chosen from on val
    searches: int | None  # independent searches per task x budget; None: the flag interface's single search
    supernet_epochs: int | None
    peft_glora_ranks: list[int]
    full_ft_warmup: float | None = None  # None: optim.warmup_epochs
    tune_seeds: int = 1  # seeds 0..k-1 train each grid point; the mean val accuracy chooses
    export_final: bool = False  # write each final (train+val -> test) model as plain timm beside its result.json
    plan: Plan | None = None
    flag_lrs: tuple[float, ...] = DEFAULT_LRS  # the flags' --lrs, which every method (but probe_logreg) chose from

    def grid(self, method: str) -> list[float]:
        """``method``'s grid; a method of older rows, not run now, had the flags' lr grid."""
        return self.grids.get(method) or list(DEFAULT_CS if method == "probe_logreg" else self.flag_lrs)


def setup_from_plan(plan: Plan, cfg, where: str, tasks: list[str] | None) -> Setup:
    methods = sorted(plans.check_config(plan, cfg, where), key=_run_order)
    for task in tasks or []:
        if task not in plan.tasks:
            raise PlanError(f"{where}: --tasks {task} is not among the plan's tasks {list(plan.tasks)}; run one of those")
    return Setup(tasks=list(plan.tasks), run_tasks=list(tasks or plan.tasks), budgets=list(plan.budgets), seeds=plan.seeds, methods=methods,
                 grids={m: plans.method_grid(plan, m) for m in methods}, searches=plan.searches, supernet_epochs=plan.supernet_epochs,
                 peft_glora_ranks=list(LORA_RANKS), full_ft_warmup=plan.full_ft_warmup_epochs, tune_seeds=plan.tune_seeds, plan=plan)


def setup_from_flags(args: argparse.Namespace, cfg) -> Setup:
    space = space_for(cfg.space, cfg.model.name)
    known = plans.method_names(args.budgets, None, args.peft_glora_ranks, [r for r in LORA_RANKS if r in space.ranks])
    methods = sorted(chosen(known, args.methods), key=_run_order)
    return Setup(tasks=args.tasks, run_tasks=args.tasks, budgets=args.budgets, seeds=args.seeds, methods=methods,
                 grids={m: list(DEFAULT_CS if m == "probe_logreg" else args.lrs) for m in methods}, searches=None,
                 supernet_epochs=args.supernet_epochs, peft_glora_ranks=args.peft_glora_ranks, flag_lrs=tuple(args.lrs))


# ---- one run ------------------------------------------------------------------------------------
def _backbone_and_task(cfg, task: str):
    """The pretrained backbone without a head, the task's data at its preprocessing, and how
    the backbone was built."""
    embedded = ensure_embedded_backbone(cfg.pretrain, cfg.paths.cache) if cfg.model.name == EMBEDDED else None
    model, spec = load_backbone(cfg.model, num_classes=0, embedded_dir=embedded, cache_root=cfg.paths.cache)
    return model, build_task(replace(cfg.data, task=task), spec.preprocess), spec


def export_plain(model: torch.nn.Module, spec, num_classes: int, run_dir: Path) -> None:
    """A trained method's model as plain timm, as glora-retrain exports one (model.safetensors
    + model.json), so that glora-evaluate can score it: PEFT's adapters merged and unloaded,
    GLoRA layers merged, anything else as it is."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    elif is_wrapped(model):
        model = merge(model)
    write_plain_model(run_dir, model, spec, num_classes, {"model": spec.name, "num_classes": num_classes})


def run_method(name: str, build, cfg: TrainConfig, task: str, seed: int, lr: float, splits: tuple[str, str], run_dir: Path,
               also: tuple[str, ...] = (), export: bool = False) -> dict:
    """Train one method on one task with one seed and lr on ``splits`` (train, eval); a
    finished run is read back from its ``result.json`` (runs are short: an interrupted one
    starts over, without per-epoch checkpoints or plots). The final model is also scored
    on the splits in ``also`` (``<split>_acc``): one training answers val and test."""
    done = run_dir / "result.json"
    if done.is_file() and (not export or (run_dir / "model.json").is_file()):
        return json.loads(done.read_text())
    model, task_data, spec = _backbone_and_task(cfg, task)
    torch.manual_seed(seed)
    model.reset_classifier(task_data.num_classes)
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    torch.manual_seed(seed)
    model = build(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    head = sum(p.numel() for p in trainable if id(p) in head_ids)
    adapter = getattr(model, "adapter_params", sum(p.numel() for p in trainable) - head)
    trainer = replace(cfg.trainer, seed=seed, eval_every=cfg.trainer.epochs)  # only the last epoch is reported: one evaluation, not one per epoch
    started = time.time()
    optim = replace(cfg.optim, lr=lr)
    history = fit(model, task_data, optim, trainer, splits, groups=optim.groups(model))
    row = {"task": task, "method": name, "seed": seed, "lr": lr, "eval_split": splits[1], "adapter_params": adapter, "head_params": head,
           "acc": history[-1][f"{splits[1]}/acc"], "train_acc": history[-1]["train/acc"],
           **{f"{split}_acc": evaluate(model, task_data.loader(split), pick_device(trainer.device))["acc"] for split in also},
           "seconds": round(time.time() - started, 1)}
    if export:  # before result.json: a run is done once both are written
        export_plain(model, spec, task_data.num_classes, run_dir)
    write_json_atomic(done, row)
    return row


def run_probe_logreg(cfg, task: str, Cs: list[float], run_dir: Path) -> dict:
    """``probe_grid`` on the frozen backbone's features (C chosen on val, refit on
    train+val, scored on test), read back from ``result.json`` once done for this C grid."""
    done = run_dir / "result.json"
    if done.is_file() and set(json.loads(done.read_text())["val_acc"]) == {f"{c:g}" for c in Cs}:
        return json.loads(done.read_text())
    model, task_data, _ = _backbone_and_task(cfg, task)
    started = time.time()
    out = probe_grid(model, {split: task_data.loader(split) for split in ("train", "val", "test")}, pick_device(cfg.trainer.device), Cs)
    result = {**out, "val_acc": {f"{c:g}": acc for c, acc in out["val_acc"].items()}, "seconds": round(time.time() - started, 1)}
    write_json_atomic(done, result)
    return result


def searched_layouts(cfg, task: str, budgets: list[int], work: Path, supernet_epochs: int | None = None, search: int | None = None) -> dict[str, dict]:
    """The pipeline's stages for one task: supernet on train, search on val per budget.
    ``search=k``: independent search k (supernet seed k in ``supernet-s<k>``, search seed k
    in ``search-<b>-s<k>``); None: the single search (``supernet``, ``search-<b>``).
    Returns ``{method name: {"layout": its JSON, "val_acc": the search's best}}``."""
    data = replace(cfg.data, task=task)
    suffix, seeded = ("", {}) if search is None else (f"-s{search}", {"seed": search})
    supernet_dir = work / task / f"supernet{suffix}"
    trainer = replace(cfg.trainer, epochs=supernet_epochs or cfg.trainer.epochs, **seeded)
    train_supernet(narrow(cfg, TrainConfig, data=data, trainer=trainer), supernet_dir)
    found = {}
    for budget in budgets:
        search_dir = work / task / f"search-{budget}{suffix}"
        metrics = search_dir / "metrics.json"
        if not metrics.is_file():  # a finished search is read back, an interrupted one resumes
            resume = str(search_dir) if (search_dir / "search_state.json").is_file() else None
            run_search(narrow(cfg, SearchJobConfig, supernet=str(supernet_dir), resume=resume, search=replace(cfg.search, budget=budget, **seeded)),
                       search_dir)
        found[_searched_name(budget, search)] = {"layout": search_dir / "layout.json", "val_acc": pd.read_json(metrics, typ="series").get("best_val_acc")}
    return found


def _searched_name(budget: int, search: int | None) -> str:
    return f"glora_search_{budget}" + ("" if search is None else f"_s{search}")


def method_list(cfg, space, budgets: list[int], found: dict[str, dict], seed: int, peft_glora_ranks: list[int]) -> dict:
    """Every trained method's model builder for one seed (random layouts are drawn per seed);
    the searched ones are those of ``found``."""
    up = cfg.glora
    out = {"probe": head_only, "full_ft": full_ft,
           **{f"lora_r{r}": peft_lora(r) for r in LORA_RANKS},
           **{f"lora_r{r}_alpha_r": peft_lora(r, r) for r in ALPHA_R_RANKS},
           **{f"peft_glora_r{r}": peft_glora(r) for r in peft_glora_ranks},
           **{f"glora_lora_r{r}": glora_layout(lora_layout(space, r), seed, up) for r in LORA_RANKS if r in space.ranks},
           **{f"glora_random_{b}": glora_layout(random_layout(space, b, seed), seed, up) for b in budgets},
           **{name: glora_layout(lambda _m, path=info["layout"]: Layout.load(path), seed, up) for name, info in found.items()}}
    return {name: out[name] for name in sorted(out, key=_run_order)}


def chosen(names, patterns: list[str] | None) -> list[str]:
    """The method names matching any of ``patterns`` (shell globs; None: all), in run order."""
    return [n for n in names if patterns is None or any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def _run_order(name: str) -> tuple:
    """The searched layouts, then the LoRA and random ones they are compared with, then the
    rest (budgets in numeric order, then searches): a cut-short run still holds the
    comparisons the benchmark exists for, and the tables list methods in the same order."""
    families = ("glora_search_", "lora_r1", "lora_r4", "glora_random_", "glora_lora_", "peft_glora_", "lora_r", "full_ft", "probe_logreg", "probe")
    budget = re.search(r"_(\d+)(?:_s(\d+))?$", name)
    return (next(i for i, prefix in enumerate(families) if name.startswith(prefix)), int(budget.group(1)) if budget else 0,
            int(budget.group(2)) if budget and budget.group(2) else -1, name)


def method_dir(task_dir: Path, name: str, found: dict[str, dict]) -> Path:
    """Where a method's runs are kept: a searched layout's under its hash, so a search that
    now picks another layout (another re-ranking, say) trains it anew."""
    return task_dir / name / (Layout.load(found[name]["layout"]).hash if name in found else "")


def benchmark_task(cfg, task: str, setup: Setup, work: Path) -> None:
    """Tune each method on train/val (seed 0), then train+val -> test for every seed; the
    rows land in ``work/<task>/{tuning,final}.csv``, beside the rows of methods not run now
    (``--methods`` adds to a table, it does not cut it down)."""
    space = space_for(cfg.space, cfg.model.name)
    found = {}
    for search in ([None] if setup.searches is None else range(setup.searches)):
        budgets = [b for b in setup.budgets if _searched_name(b, search) in setup.methods]
        if budgets:
            found.update(searched_layouts(cfg, task, budgets, work, setup.supernet_epochs, search))
    tuning, final = _others(work / task / "tuning.csv", setup.methods), _others(work / task / "final.csv", setup.methods)
    for name in setup.methods:
        if name == "probe_logreg":
            tries, rows = _logreg_rows(cfg, task, setup, work / task / name)
        else:
            tries, rows = _trained_rows(cfg, space, task, name, setup, found, method_dir(work / task, name, found))
        tags = {} if setup.plan is None else {"plan": setup.plan.name, "search": _search_of(name)}
        tuning += [{**r, **tags} for r in tries]
        final += [{**r, **tags} for r in rows]
        write_text_atomic(work / task / "final.csv", pd.DataFrame(final).to_csv(index=False))
        if tuning:
            write_text_atomic(work / task / "tuning.csv", pd.DataFrame(tuning).to_csv(index=False))


def labels_seen(data) -> str:
    """What the report says of the labelled images each method saw (VTAB-1k's 1,000, or a k-shot draw)."""
    if data.shots is not None:
        k, v = data.shots, data.val_shots or data.shots
        return (f"Labelled images each method saw: {k} + {v} per class (data.shots={k}, data.val_shots={v}, data.split_seed="
                f"{data.split_seed}): searched GLoRA's supernet trains on the {k} per class and its search ranks on the {v} per class; "
                f"every method chooses on those {v} per class after training on the {k}, then trains on both.")
    rank = data.rank_images
    return (f"Labelled images each method saw: searched GLoRA {800 + 200 + rank:,} (supernet: train 800; search: val 200"
            f"{f' + {rank} ranking images' if rank else ''}; retraining: train+val 1,000); every other method 1,000 (train 800 to "
            "choose on val 200, then train+val).")


def _tuning_words(setup: Setup) -> str:
    return "seed 0" if setup.tune_seeds == 1 else f"seeds 0..{setup.tune_seeds - 1}, the best mean val accuracy"


def _search_of(name: str) -> int | None:
    found = re.fullmatch(r"glora_search_\d+_s(\d+)", name)
    return int(found.group(1)) if found else None


def _trained_rows(cfg, space, task: str, name: str, setup: Setup, found: dict, runs: Path) -> tuple[list[dict], list[dict]]:
    """One trained method: its grid on train -> val (seed 0), then every seed at the chosen lr."""
    grid = setup.grids[name]
    if name == "full_ft" and setup.full_ft_warmup is not None:
        cfg = replace(cfg, optim=replace(cfg.optim, warmup_epochs=setup.full_ft_warmup))

    def build(seed: int):
        return method_list(cfg, space, setup.budgets, found, seed, setup.peft_glora_ranks)[name]

    tries = []
    lr = grid[0]
    if len(grid) > 1:
        tries = [run_method(name, build(seed), cfg, task, seed, lr, ("train", "val"), runs / (f"tune-lr{lr:g}" + (f"-seed{seed}" if seed else "")))
                 for lr in grid for seed in range(setup.tune_seeds)]
        val = pd.DataFrame(tries).groupby("lr")["acc"].mean()
        lr = float(max(grid, key=lambda x: (val[x], -x)))  # best mean val accuracy over the tuning seeds; a tie goes to the smaller lr
        log.info("%s %s: val acc %s -> lr %g", task, name, [round(val[x], 3) for x in grid], lr)
    rows = []
    for seed in range(setup.seeds):
        row = run_method(name, build(seed), cfg, task, seed, lr, ("trainval", "test"), runs / f"lr{lr:g}" / f"seed{seed}",
                         export=setup.export_final)
        log.info("%s %s seed %d lr %g: test acc %.4f (%d + %d params, %.0f s)", task, name, seed, lr, row["acc"],
                 row["adapter_params"], row["head_params"], row["seconds"])
        rows.append(row)
    return tries, rows


def _logreg_rows(cfg, task: str, setup: Setup, run_dir: Path) -> tuple[list[dict], list[dict]]:
    """The logistic probe: a row per C of its grid (val), and its one fit's test accuracy
    as a row per seed (the fit has no seed; the rows pair it with the other methods)."""
    out = run_probe_logreg(cfg, task, setup.grids["probe_logreg"], run_dir)
    base = {"task": task, "method": "probe_logreg", "hparam": "C", "adapter_params": 0, "head_params": out["classes"] * (out["features"] + 1)}
    tries = [{**base, "seed": 0, "lr": float(c), "eval_split": "val", "acc": acc, "seconds": 0.0} for c, acc in out["val_acc"].items()]
    log.info("%s probe_logreg: val acc %s -> C %g: test acc %.4f", task, {c: round(a, 3) for c, a in out["val_acc"].items()}, out["C"], out["test_acc"])
    rows = [{**base, "seed": seed, "lr": out["C"], "eval_split": "test", "acc": out["test_acc"], "train_acc": out["trainval_acc"],
             "seconds": out["seconds"] if seed == 0 else 0.0} for seed in range(setup.seeds)]
    return tries, rows


def _others(path: Path, names: list[str]) -> list[dict]:
    """The rows of ``path`` (a task's table) whose method is not among ``names``."""
    if not path.is_file():
        return []
    rows = pd.read_csv(path)
    return rows[~rows["method"].isin(names)].to_dict("records")


# ---- tables and plot ------------------------------------------------------------------------
def _cell(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {0 if pd.isna(std) else std:.3f}"


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per (method, task) with the lr (probe_logreg: the C) each chose,
    and the mean over tasks per method (± std over seeds of that mean)."""
    runs = runs.assign(hparam=runs["hparam"].fillna("lr") if "hparam" in runs else "lr")
    per_task = runs.groupby(["method", "task"], sort=False).agg(
        adapter_params=("adapter_params", "mean"), head_params=("head_params", "mean"),
        mean=("acc", "mean"), std=("acc", "std"), lr=("lr", "first"), hparam=("hparam", "first"))
    cells = per_task.apply(lambda r: f"{_cell(r['mean'], r['std'])} ({r['hparam']} {r['lr']:g})", axis=1).unstack("task")
    seed_means = runs.groupby(["method", "seed"], sort=False)["acc"].mean().groupby("method", sort=False)
    overall = seed_means.agg(["mean", "std"])
    params = per_task.groupby("method", sort=False)[["adapter_params", "head_params"]].mean().round().astype(int)
    table = params.join(cells).join(overall.apply(lambda r: _cell(r["mean"], r["std"]), axis=1).rename("overall"))
    table["overall_mean"] = overall["mean"].round(4)
    return table.loc[list(dict.fromkeys(runs["method"]))]


def edge_choices(runs: pd.DataFrame, grids: dict[str, list[float]]) -> list[str]:
    """The (method, task) choices at either edge of their grid (of two or more values): a
    grid that binds, to be extended in a new plan (never here)."""
    out = []
    for (method, task), value in runs.groupby(["method", "task"], sort=False)["lr"].first().items():
        grid = grids.get(method, [])
        if len(grid) < 2:
            continue
        for edge, word in ((min(grid), "smallest"), (max(grid), "largest")):
            if math.isclose(value, edge, rel_tol=1e-9):
                out.append(f"{task}/{method} {'C' if method == 'probe_logreg' else 'lr'} {value:g} ({word} of {[float(f'{g:g}') for g in grid]})")
    return out


def rerank_rows(work: Path, tasks: list[str], budgets: list[int]) -> pd.DataFrame:
    """Per search: the supernet's first vs the re-ranked winner, by stand-alone val accuracy."""

    def lr(row: dict) -> str:
        return f" (lr {row['standalone_lr']:g})" if "standalone_lr" in row else ""  # states from before the lr grid have none

    rows = []
    for task in tasks:
        for budget in budgets:
            dirs = sorted((d for d in (work / task).glob(f"search-{budget}*") if re.fullmatch(rf"search-{budget}(-s\d+)?", d.name)),
                          key=lambda d: (len(d.name), d.name))
            for search_dir in dirs:
                path = search_dir / "metrics.json"
                metrics = json.loads(path.read_text()) if path.is_file() else {}
                if not metrics.get("reranked"):
                    continue
                first, won = metrics["reranked"][0], next(r for r in metrics["reranked"] if r["layout_hash"] == metrics["best_layout_hash"])
                rows.append({"task": task, "budget": budget, "search": search_dir.name.rpartition("-s")[2] if "-s" in search_dir.name else "",
                             "candidates": len(metrics["reranked"]),
                             "supernet_first": f"{first['layout_hash']} ({first['trainable_params']:,})",
                             "its_val": f"{first['standalone_val_acc']:.4f}{lr(first)}",
                             "winner": f"{won['layout_hash']} ({won['trainable_params']:,})", "winner_val": f"{won['standalone_val_acc']:.4f}{lr(won)}"})
    return pd.DataFrame(rows)


def plot(runs: pd.DataFrame, path: Path, title: str) -> plt.Figure:
    """Accuracy vs trainable params, one line per family (a budget's independent searches
    as one point, their mean); returns the (closed) figure."""
    runs = runs.assign(method=runs["method"].str.replace(r"^(glora_search_\d+)_s\d+$", r"\1", regex=True))
    mean = runs.groupby("method", sort=False).agg(params=("adapter_params", "mean"), acc=("acc", "mean"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    families = [(r"^lora_r\d+$", "PEFT LoRA r={ranks} (alpha 8)", "o-"), (r"^lora_r\d+_alpha_r$", "PEFT LoRA r={ranks} (alpha r)", "o:"),
                (r"^glora_search_", "GLoRA searched (budget sweep)", "s-"), (r"^glora_random_", "GLoRA random layout", "x--"),
                (r"^glora_lora_r\d+$", "GLoRA LoRA layout r={ranks}", "^-."), (r"^peft_glora_", "PEFT GLoRA uniform", "D")]
    for pattern, label, style in families:
        rows = mean[mean.index.str.contains(pattern)].sort_values("params")
        if len(rows):
            ranks = ",".join(re.search(r"lora_r(\d+)", n).group(1) for n in rows.index) if "{ranks}" in label else ""
            ax.plot(rows["params"], rows["acc"], style, label=label.format(ranks=ranks))
    for name, style in (("full_ft", "k--"), ("probe", "k:"), ("probe_logreg", "k-.")):
        if name in mean.index:
            ax.axhline(mean.loc[name, "acc"], linestyle=style[1:], color="k", label=f"{name} ({mean.loc[name, 'params']:.0f} params)")
    ax.set_xscale("log")
    ax.set_xlabel("trainable params (head excluded)")
    ax.set_ylabel("test accuracy (mean over tasks and seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


# ---- command line -------------------------------------------------------------------------------
_PLAN_SETS = {"seeds": "seeds", "budgets": "budgets", "lrs": "lrs / probe_C", "peft_glora_ranks": "methods", "methods": "methods",
              "epochs": "epochs", "supernet_epochs": "supernet_epochs", "quick": "overrides (experiment=smoke)", "overrides": "overrides"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plan", default=None, help="a plan file (benchmarks/plans/<name>.yaml): run exactly what it says")
    parser.add_argument("--tasks", nargs="+", default=None, help="the tasks this process runs (default: all; with --plan, the plan's)")
    parser.add_argument("--seeds", type=int, default=None, help=f"default {DEFAULT_SEEDS}")
    parser.add_argument("--budgets", type=int, nargs="+", default=None, help=f"default {list(DEFAULT_BUDGETS)}")
    parser.add_argument("--lrs", type=float, nargs="+", default=None, help=f"the lr grid every method chooses from on val (default {list(DEFAULT_LRS)})")
    parser.add_argument("--peft-glora-ranks", type=int, nargs="*", default=None, help="default [2]")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="run only the methods matching these globs, e.g. 'glora_*' lora_r1 probe (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="override trainer.epochs (default: the config's)")
    parser.add_argument("--supernet-epochs", type=int, default=None, help="the supernet's epochs (default: --epochs)")
    parser.add_argument("--quick", action="store_true", help="smoke backbone and search; checks the script runs")
    parser.add_argument("--no-report", action="store_true", help="run the tasks only (one process per task, then --report)")
    parser.add_argument("--report", action="store_true", help="only write the table from the tasks' finished rows")
    parser.add_argument("--name", default=None, help="results file name (default: the plan's name, else the machine's tag)")
    parser.add_argument("--work", default="runs/bench-accuracy", help="run dirs (resumable), in <work>/<plan name> or <work>/{quick,full}")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the pipeline config, e.g. experiment=real_cpu")
    args = parser.parse_args(argv)
    if args.plan:
        for flag, field in _PLAN_SETS.items():
            if getattr(args, flag) not in (None, False, []):
                raise PlanError(f"plan {args.plan}: --{flag.replace('_', '-')} is the plan's to set (its field {field}); drop the flag")
    else:
        defaults = {"tasks": ["count", "orientation", "texture"], "seeds": DEFAULT_SEEDS, "budgets": list(DEFAULT_BUDGETS), "lrs": list(DEFAULT_LRS),
                    "peft_glora_ranks": [2]}
        for flag, value in defaults.items():
            if getattr(args, flag) is None:
                setattr(args, flag, value)
    return args


def _compose(overrides: list[str], where: str | None = None):
    """The pipeline config under ``overrides``; a plan's bad override is a ``PlanError``."""
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return OmegaConf.to_object(compose("pipeline", overrides=overrides))
    except (HydraException, OmegaConfBaseException, JobError) as e:
        if where is None:
            raise
        raise PlanError(f"{where}: overrides {overrides} do not compose: {' '.join(str(e).split())}") from None


def flag_run(quick: bool, overrides: list[str], work: str, name: str | None):
    """A run set by flags, not a plan (this script's, fewshot.py's, domain.py's): the pipeline
    config under ``overrides`` (the smoke backbone and search first under ``--quick``), its
    work dir, its results' tag, and the overrides as composed."""
    overrides = [*(["experiment=smoke"] if quick else []), *overrides]
    return _compose(overrides), Path(work) / ("quick" if quick else "full"), name or (machine_tag() + ("-quick" if quick else "")), overrides


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except PlanError as e:
        print(f"accuracy.py: {e}", file=sys.stderr)
        raise


def _main(argv: list[str] | None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.plan:
        plan_path = Path(args.plan)
        plan = plans.load_plan(plan_path)
        where = f"plan {plan_path}"
        overrides = [*plan.overrides, f"trainer.epochs={plan.epochs}"]
        cfg = _compose(overrides, where)
        setup = setup_from_plan(plan, cfg, where, args.tasks)
        work, tag = Path(args.work) / plan.name, args.name or plan.name
        command = f"python benchmarks/accuracy.py --plan {plan_path}"
    else:
        cfg, work, tag, overrides = flag_run(args.quick, [*([f"trainer.epochs={args.epochs}"] if args.epochs else []), *args.overrides],
                                             args.work, args.name)
        setup = setup_from_flags(args, cfg)
        command = (f"python benchmarks/accuracy.py --tasks {' '.join(args.tasks)} --budgets {' '.join(map(str, args.budgets))} "
                   f"--lrs {' '.join(f'{x:g}' for x in args.lrs)} --seeds {args.seeds}"
                   f"{' --methods ' + ' '.join(args.methods) if args.methods else ''}"
                   f"{f' --supernet-epochs {args.supernet_epochs}' if args.supernet_epochs else ''} {' '.join(overrides)}")
    if not args.report:
        if setup.plan is not None:
            plans.record(plan_path, work)
        for task in setup.run_tasks:
            benchmark_task(cfg, task, setup, work)
    if not args.no_report:
        report(cfg, setup, work, Path(args.out), tag, command, plan_path if setup.plan is not None else None)


def _load_rows(work: Path, tasks: list[str], name: str) -> pd.DataFrame:
    frames = [pd.read_csv(work / t / name) for t in tasks if (work / t / name).is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "task", "seed", "lr", "acc"])


def report(cfg, setup: Setup, work: Path, out: Path, tag: str, command: str, plan_path: Path | None = None) -> None:
    """The tables, the paired tests and the plot of the finished rows; for a plan, only when
    the plan file is the one its run started with and the rows are exactly its cells."""
    runs = _load_rows(work, setup.tasks, "final.csv")
    tuning = _load_rows(work, setup.tasks, "tuning.csv")
    missing = []
    if setup.plan is not None:
        where = f"plan {plan_path}"
        plans.check_unchanged(plan_path, work)
        plans.check_rows(setup.plan, setup.methods, runs, f"{where} (rows in {work}/<task>/final.csv)")
        started = json.loads((work / plans.RECORD_INFO).read_text())
    else:
        if not len(runs):
            raise SystemExit(f"no finished rows in {work}/<task>/final.csv for tasks {setup.tasks}: run them first (without --report)")
        cells = runs.groupby("method")[["task", "seed"]].apply(lambda g: len(g.drop_duplicates()))
        missing = sorted(cells[cells < len(setup.tasks) * setup.seeds].index)  # a cut-short run: left out, named
        runs = runs[~runs["method"].isin(missing)]
    runs = runs.loc[sorted(runs.index, key=lambda i: _run_order(runs.at[i, "method"]))].reset_index(drop=True)  # stable: tasks, seeds keep their order
    table = summarise(runs)
    tests = paired_tests(runs, setup.budgets)
    reranks = rerank_rows(work, setup.tasks, setup.budgets)
    edges = edge_choices(runs, {m: setup.grid(m) for m in runs["method"].unique()})
    space = space_for(cfg.space, cfg.model.name)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"accuracy-{tag}.csv", runs.to_csv(index=False))
    if len(tuning):
        write_text_atomic(out / f"accuracy-{tag}-tuning.csv", tuning.to_csv(index=False))
    plot(runs, out / f"accuracy-{tag}.png", f"{cfg.model.name}: {', '.join(setup.tasks)}, {setup.seeds} seeds, tuned on val")
    wall = (tuning["seconds"].sum() if len(tuning) else 0) + runs["seconds"].sum()
    p = setup.plan
    searched_words = ("one search (seed 0)" if setup.searches is None else
                      f"{setup.searches} independent searches (search k: supernet trainer.seed=k, search.seed=k)")
    rank = cfg.data.rank_images
    text = "\n".join([
        f"# Accuracy: {cfg.model.name}, " + (f"plan `{p.name}`" if p else "tuned protocol (flags, not a pre-registered plan)"), "",
        f"Machine: {json.dumps(machine_info())}", "",
        *([_plan_lines(p, plan_path, started), ""] if p else []),
        f"`{command.strip()}`", "",
        (f"Protocol: every method trains {cfg.trainer.epochs} epochs (AdamW, warm-up {cfg.optim.warmup_epochs:g} epochs then cosine, "
         f"weight decay {cfg.optim.weight_decay:g}, batch {cfg.data.batch_size}); {_grid_words(setup)}; "
         f"each chooses on val after training on train ({_tuning_words(setup)}), then trains on train+val at its choice and reports the final epoch's "
         f"test accuracy for seeds 0..{setup.seeds - 1}. Test is scored once per (method, task, seed) and chooses nothing (but the "
         f"best rival of each family below). GLoRA's per-support-tensor steps: {cfg.optim.describe_steps()}, up-factor "
         f"init {cfg.glora.up_init}, vector B on the inputs' {cfg.glora.vector_b}. Searched layouts: {searched_words}, each a "
         f"{setup.supernet_epochs or cfg.trainer.epochs}-epoch supernet on train (space ranks {list(space.ranks)}) and "
         f"{strategy_name(cfg.search)} {cfg.search.population} x {cfg.search.generations} ranked on val"
         f"{f' + {rank} held-out ranking images' if rank else ''}, retrained per seed. Training time in these rows: {wall:.0f} s."), "",
        labels_seen(cfg.data), "",
        ("Chosen on an edge of its grid (extend the grid in a new plan; not extended here): " + "; ".join(edges) + "."
         if edges else "No choice lies on an edge of its grid."), "",
        ("Test accuracy, mean ± std over seeds (the lr, or probe_logreg's C, each method chose on val); `overall`: mean over tasks "
         "(± std over seeds of that mean). `adapter_params`: trainable params outside the head."
         + (" probe_logreg has no seed (a deterministic fit on frozen features): its one test accuracy is repeated as a row "
            "per seed, std 0, so it pairs like the rest." if "probe_logreg" in table.index else "")), "",
        markdown_table(table.drop(columns="overall_mean").reset_index()), "",
        (f"Searched GLoRA (per task and seed, the mean over its searches) against the best member of each rival family that fits "
         f"the budget, paired over (task, seed). The best rival is picked on test (its mean test accuracy), which favours the "
         f"rivals. `difference`: mean of searched - rival over the pairs, `paired_std` their std; `t_p`: paired t-test "
         f"(scipy.stats.ttest_rel), `wilcoxon_p`: Wilcoxon signed-rank (>= {WILCOXON_MIN_PAIRS} pairs, not all zero); "
         f"`verdict` from t_p: win / loss when p < {ALPHA}, anything else a tie."), "",
        markdown_table(_formatted(tests)) if len(tests) else ("(no rival rows beside the searched ones)" if table.index.str.startswith("glora_search_").any()
                                                              else "(no searched layouts)"), "",
        *(["Re-ranking (`search.rerank`): the stand-alone accuracy (trained on train 800, scored on the search's ranking images: val 200 "
           f"+ {rank} held-out) of the supernet's first layout "
           f"and of the re-ranked winner (the top {cfg.search.rerank} and the LoRA layouts that fit, each trained "
           f"{cfg.search.rerank_epochs or cfg.trainer.epochs} epochs at "
           f"{'its best lr of ' + str(list(cfg.search.rerank_lrs)) if cfg.search.rerank_lrs else f'lr {cfg.optim.lr:g}'}):", "",
           markdown_table(reranks), ""] if len(reranks) else []),
        f"![accuracy vs params](accuracy-{tag}.png)", "",
        *([f"Not in the table (not run on every task and seed): {', '.join(missing)}.", ""] if missing else []),
    ])
    write_text_atomic(out / f"accuracy-{tag}.md", text)
    print(text)


def _plan_lines(plan: Plan, path: Path, started: dict) -> str:
    commit = started.get("commit")
    headline = ("A headline run: " if plan.headline else "**Not a headline run**: ") + (
        f"{plan.seeds} retraining seeds (a headline run needs >= {plans.HEADLINE_SEEDS}), {plan.searches} independent searches "
        f"per task x budget (>= {plans.HEADLINE_SEARCHES}).")
    return (f"Plan: `{path}`, git blob `{plans.blob_hash(path)}` (`git hash-object`), "
            + (f"committed (HEAD {commit[:12]}) when the run started {started['started']}. " if commit else
               f"**not committed when the run started** ({started['started']}): not pre-registered. ")
            + (f"Code: HEAD {started['code'][:12]}{' with uncommitted changes' if started.get('code_changed') else ''} when the run started. "
               if started.get("code") else "")
            + f"The rows are exactly the plan's cells (per method: {len(plan.tasks)} task{'s' * (len(plan.tasks) > 1)} x {plan.seeds} seeds). {headline}")


def _grid_words(setup: Setup) -> str:
    """Which grid each family chose from, in words."""
    families: dict[tuple, list[str]] = {}
    for method, grid in setup.grids.items():
        families.setdefault(tuple(grid), []).append(method)
    words = []
    for grid, methods in families.items():
        kind = "C" if methods == ["probe_logreg"] else "lr"
        warm = f" (warm-up {setup.full_ft_warmup:g} epochs)" if methods == ["full_ft"] and setup.full_ft_warmup is not None else ""
        words.append(f"{', '.join(methods)} chose {kind} from {[float(f'{g:g}') for g in grid]}{warm}")
    return "; ".join(words) + ("; probe_logreg is a logistic regression on the frozen pre-logit features, refit on train+val at its C"
                               if "probe_logreg" in setup.grids else "")


def _formatted(tests: pd.DataFrame) -> pd.DataFrame:
    return tests.assign(**{c: tests[c].map(lambda v: "–" if pd.isna(v) else f"{v:.3g}") for c in ("t_p", "wilcoxon_p")},
                        paired_std=tests["paired_std"].map(lambda v: "–" if pd.isna(v) else f"{v:.4f}"))


if __name__ == "__main__":
    main()
