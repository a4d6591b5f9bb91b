#!/usr/bin/env python
"""Accuracy on the embedded suite: searched GLoRA against the baselines people would try.

Every method starts from the same pretrained embedded backbone, gets a fresh head seeded
the same way, and is trained with the same loop (``glora.training.fit``), optimiser,
schedule and epochs on the VTAB protocol (train on train+val, report the final epoch's
test accuracy; no selection on test). Methods:

* ``probe``            head only (backbone frozen);
* ``full_ft``          every parameter;
* ``lora_r{1,2,4,8}``  PEFT's LoRA (library defaults: alpha 8, no dropout) on the layers
                       GLoRA targets (every block's qkv / proj / fc1 / fc2);
* ``peft_glora_r8``    PEFT's own GLoRA, one uniform config for every targeted layer:
                       its defaults (A, B, C LoRA; D, E constant) at r=8, and ``_r2``;
* ``glora_random_<b>`` this project's GLoRA with a random legal layout of 90–100% of
                       budget ``b`` (drawn per seed);
* ``glora_search_<b>`` the layout the pipeline finds under budget ``b`` (supernet trained
                       on train, evolutionary search ranked on val, both with seed 0),
                       retrained per seed.

Trainable parameters are reported as ``adapter_params`` (support tensors / LoRA factors /
the backbone for full_ft) and ``head_params`` apart. Every run lives in its own folder under
``--work`` and resumes from its checkpoint, so an interrupted benchmark continues.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python benchmarks/accuracy.py                           # 3 tasks x 3 seeds
    .venv/bin/python benchmarks/accuracy.py --tasks count --seeds 1 --epochs 2 --quick

Writes benchmarks/results/accuracy-<device>.{md,csv,png} (``-quick`` for --quick).
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
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from machine import machine_info, machine_tag

from glora.backbone import classifier_name, load_backbone
from glora.data import build_task
from glora.embedded_backbone import ensure_embedded_backbone
from glora.jobs.app import CONF_DIR  # registers the config schemas
from glora.run.io import write_text_atomic
from glora.search import Budget, LayoutOps, strategy_name
from glora.search.report import markdown_table
from glora.spaces import DEFAULT_TARGETS, Layout
from glora.stages.config import narrow
from glora.stages.search import SearchJobConfig, run_search
from glora.stages.train import TrainJobConfig as TrainConfig
from glora.stages.train import train_supernet
from glora.supernet import set_layout, wrap
from glora.training import Checkpoint, RunFiles, fit

log = logging.getLogger("accuracy")

LORA_RANKS = (1, 2, 4, 8)
PEFT_GLORA_RANKS = (8, 2)
DEFAULT_BUDGETS = (4096, 8192, 16384)  # LoRA r=1, 2, 4 on the embedded backbone's targets


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


def peft_lora(rank: int):
    def build(model: torch.nn.Module) -> torch.nn.Module:
        import peft

        return peft_model(model, peft.LoraConfig(r=rank, target_modules=DEFAULT_TARGETS))

    return build


def peft_glora(rank: int):
    def build(model: torch.nn.Module) -> torch.nn.Module:
        import peft

        return peft_model(model, peft.GloraConfig(r=rank, target_modules=DEFAULT_TARGETS))

    return build


def glora_layout(layout_for, seed: int):
    """This project's GLoRA with the fixed layout ``layout_for(model)``."""

    def build(model: torch.nn.Module) -> torch.nn.Module:
        layout = layout_for(model)
        wrap(model, layout.space, seed=seed, modules_to_train=(classifier_name(model),))
        set_layout(model, layout)
        model.adapter_params = layout.trainable_params  # the supernet's tensors are stored at max rank
        return model

    return build


def random_layout(space, budget: int, seed: int):
    def draw(model: torch.nn.Module) -> Layout:
        template = Layout.sample(model, space, seed=0)
        ops = LayoutOps(template, Budget(budget, int(0.9 * budget)))
        return ops.layout(ops.random(random.Random(seed)))

    return draw


# ---- one run ------------------------------------------------------------------------------------
def run_method(name: str, build, cfg: TrainConfig, task: str, seed: int, run_dir: Path) -> dict:
    """Train one method on one task with one seed (or read the finished run back)."""
    data = replace(cfg.data, task=task)
    model, spec = load_backbone(cfg.model, num_classes=0, embedded_dir=ensure_embedded_backbone(cfg.pretrain, cfg.paths.cache))
    task_data = build_task(data, spec.preprocess)
    torch.manual_seed(seed)
    model.reset_classifier(task_data.num_classes)
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    torch.manual_seed(seed)
    model = build(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    head = sum(p.numel() for p in trainable if id(p) in head_ids)
    adapter = getattr(model, "adapter_params", sum(p.numel() for p in trainable) - head)
    trainer = replace(cfg.trainer, seed=seed)
    identity = {"benchmark": "accuracy", "method": name, "task": task, "seed": seed}
    started = time.time()
    callbacks = (Checkpoint(run_dir, identity, "weights.safetensors"), RunFiles(run_dir, f"{name} on {task}, seed {seed}", {"identity": identity}))
    history = fit(model, task_data, cfg.optim, trainer, ("trainval", "test"), callbacks)
    return {"task": task, "method": name, "seed": seed, "adapter_params": adapter, "head_params": head,
            "test_acc": history[-1]["test/acc"], "train_acc": history[-1]["train/acc"], "seconds": round(time.time() - started, 1)}


def searched_layouts(cfg, task: str, budgets: list[int], work: Path) -> dict[int, dict]:
    """The pipeline's stages for one task: supernet on train, search on val per budget."""
    data = replace(cfg.data, task=task)
    supernet_dir = work / task / "supernet"
    train_supernet(narrow(cfg, TrainConfig, data=data), supernet_dir)
    found = {}
    for budget in budgets:
        search_dir = work / task / f"search-{budget}"
        metrics = search_dir / "metrics.json"
        if not metrics.is_file():  # a finished search is read back, an interrupted one resumes
            resume = str(search_dir) if (search_dir / "search_state.json").is_file() else None
            run_search(narrow(cfg, SearchJobConfig, supernet=str(supernet_dir), resume=resume, search=replace(cfg.search, budget=budget)),
                       search_dir)
        found[budget] = {"layout": search_dir / "layout.json", "val_acc": pd.read_json(metrics, typ="series").get("best_val_acc")}
    return found


# ---- tables and plot ------------------------------------------------------------------------
def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per (method, task), and the mean over tasks per method."""
    per_task = runs.groupby(["method", "task"], sort=False).agg(
        adapter_params=("adapter_params", "mean"), head_params=("head_params", "mean"),
        mean=("test_acc", "mean"), std=("test_acc", "std"), seeds=("seed", "nunique"))
    cells = per_task.apply(lambda r: f"{r['mean']:.3f} ± {0 if pd.isna(r['std']) else r['std']:.3f}", axis=1).unstack("task")
    seed_means = runs.groupby(["method", "seed"], sort=False)["test_acc"].mean().groupby("method", sort=False)
    overall = seed_means.agg(["mean", "std"]).apply(lambda r: f"{r['mean']:.3f} ± {0 if pd.isna(r['std']) else r['std']:.3f}", axis=1)
    params = per_task.groupby("method", sort=False)[["adapter_params", "head_params"]].mean().round().astype(int)
    table = params.join(cells).join(overall.rename("overall"))
    return table.loc[list(dict.fromkeys(runs["method"]))]


def plot(runs: pd.DataFrame, path: Path, title: str) -> None:
    mean = runs.groupby("method", sort=False).agg(params=("adapter_params", "mean"), acc=("test_acc", "mean"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    families = [("lora_r", "PEFT LoRA r=1,2,4,8", "o-"), ("glora_search_", "GLoRA searched (budget sweep)", "s-"),
                ("glora_random_", "GLoRA random layout", "x--"), ("peft_glora_", "PEFT GLoRA uniform (r=8, r=2)", "D")]
    for prefix, label, style in families:
        rows = mean[mean.index.str.startswith(prefix)].sort_values("params")
        if len(rows):
            ax.plot(rows["params"], rows["acc"], style, label=label)
    for name, style in (("full_ft", "k--"), ("probe", "k:")):
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["count", "orientation", "texture"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", type=int, nargs="+", default=list(DEFAULT_BUDGETS))
    parser.add_argument("--epochs", type=int, default=None, help="override trainer.epochs (default: the config's)")
    parser.add_argument("--quick", action="store_true", help="smoke backbone and search; checks the script runs")
    parser.add_argument("--work", default="runs/bench-accuracy", help="run dirs (resumable)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the pipeline config, e.g. optim.lr=5e-4")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = [*(["experiment=smoke"] if args.quick else []), *([f"trainer.epochs={args.epochs}"] if args.epochs else []), *args.overrides]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = OmegaConf.to_object(compose("pipeline", overrides=overrides))
    work = Path(args.work) / ("quick" if args.quick else "full")
    space = cfg.space.build()
    rows, started = [], time.time()
    for task in args.tasks:
        found = searched_layouts(cfg, task, args.budgets, work)
        for seed in range(args.seeds):
            methods = [("probe", head_only), ("full_ft", full_ft),
                       *((f"lora_r{r}", peft_lora(r)) for r in LORA_RANKS),
                       *((f"peft_glora_r{r}", peft_glora(r)) for r in PEFT_GLORA_RANKS)]
            for budget in args.budgets:
                methods.append((f"glora_random_{budget}", glora_layout(random_layout(space, budget, seed), seed)))
                methods.append((f"glora_search_{budget}", glora_layout(lambda _m, path=found[budget]["layout"]: Layout.load(path), seed)))
            for name, build in methods:
                row = run_method(name, build, cfg, task, seed, work / task / name / f"seed{seed}")
                log.info("%s %s seed %d: test acc %.4f (%d + %d params, %.0f s)", task, name, seed, row["test_acc"],
                         row["adapter_params"], row["head_params"], row["seconds"])
                rows.append(row)
    runs = pd.DataFrame(rows)
    table = summarise(runs)
    info = machine_info()
    tag = machine_tag() + ("-quick" if args.quick else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"accuracy-{tag}.csv", runs.to_csv(index=False))
    plot(runs, out / f"accuracy-{tag}.png", f"embedded suite ({', '.join(args.tasks)}), {args.seeds} seeds")
    text = "\n".join([
        "# Accuracy on the embedded suite", "",
        f"Machine: {json.dumps(info)}", "",
        (f"Tasks {args.tasks}, seeds 0..{args.seeds - 1}, {cfg.trainer.epochs} epochs, AdamW lr {cfg.optim.lr}, batch "
        f"{cfg.data.batch_size}, VTAB protocol (train on train+val, final-epoch test accuracy). Budgets {args.budgets}; "
        f"search: {strategy_name(cfg.search)}, population {cfg.search.population} x {cfg.search.generations} generations on a "
        f"{cfg.trainer.epochs}-epoch supernet (space {list(space.ranks)}), seed 0. Overrides: {overrides or 'none'}. "
        f"Wall time {time.time() - started:.0f} s."), "",
        ("Test accuracy, mean ± std over seeds; `overall` is the mean over tasks (± std over seeds of that mean). "
        "`adapter_params`: trainable params outside the head."), "",
        markdown_table(table.reset_index()), "",
        f"![accuracy vs params](accuracy-{tag}.png)", "",
    ])
    write_text_atomic(out / f"accuracy-{tag}.md", text)
    print(text)


if __name__ == "__main__":
    main()
