#!/usr/bin/env python
"""Accuracy on the embedded suite: searched GLoRA against the baselines people would try.

Every method starts from the same pretrained backbone, gets a fresh head seeded the same
way, and is trained with the same loop (``glora.training.fit``), optimiser, schedule and
epochs. Tuned protocol, the same for every method: each learning rate of one small grid
(``--lrs``) trains on train (800) and is scored on val (200) with seed 0; the best val
accuracy picks the lr; then train+val is trained with that lr for every seed and the final
epoch's test accuracy is reported (test is never used to choose anything). Methods:

* ``probe``            head only (backbone frozen);
* ``full_ft``          every parameter;
* ``lora_r{1,2,4,8}``  PEFT's LoRA (library defaults: alpha 8, no dropout) on the layers
                       GLoRA targets (every block's qkv / proj / fc1 / fc2);
* ``lora_r{1,4}_alpha_r``  the same at alpha = r (r=8 is alpha 8 already);
* ``peft_glora_r8``    PEFT's own GLoRA, one uniform config for every targeted layer:
                       its defaults (A, B, C LoRA; D, E constant) at r=2 (and r=8 with
                       ``--peft-glora-ranks 2 8``);
* ``glora_lora_r{1,2,4,8}``  this project's GLoRA with the LoRA layout (B = ``LoRA_r`` on
                       every targeted layer, the rest ``none``; its init, no alpha scale):
                       the layout the search always weighs, at the ranks the space has;
* ``glora_random_<b>`` this project's GLoRA with a random legal layout of 90–100% of
                       budget ``b`` (drawn per seed);
* ``glora_search_<b>`` the layout the pipeline finds under budget ``b`` (supernet trained
                       on train, evolutionary search ranked on val, both with seed 0),
                       retrained per seed.

Trainable parameters are reported as ``adapter_params`` (support tensors / LoRA factors /
the backbone for full_ft) and ``head_params`` apart. Every run lives in its own folder under
``--work`` and resumes from its checkpoint, so an interrupted benchmark continues.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python benchmarks/accuracy.py --epochs 10                # 3 tasks x 3 seeds
    .venv/bin/python benchmarks/accuracy.py --tasks count --seeds 1 --epochs 2 --lrs 1e-3 --quick
    # one process per task (2-core machines run them side by side), then one table:
    for t in count orientation texture; do OMP_NUM_THREADS=1 .venv/bin/python benchmarks/accuracy.py --epochs 10 --tasks $t --no-report & done; wait
    .venv/bin/python benchmarks/accuracy.py --epochs 10 --report
    # the real backbone (DINOv2 ViT-S/14) on 2 CPU cores at 56 px, one process per task, then --report:
    .venv/bin/python benchmarks/accuracy.py --tasks mnist --budgets 73728 --lrs 1e-3 1e-2 --epochs 3 --supernet-epochs 5 \
        --no-report --name real-cpu --work runs/bench-accuracy-real experiment=real_cpu data.rank_images=300 \
        --methods glora_search_73728 lora_r1 glora_random_73728 peft_glora_r2 probe full_ft
    # ... and on a GPU at 224 px:
    .venv/bin/python benchmarks/accuracy.py --tasks mnist elpv --budgets 73728 294912 --name real-224 experiment=real_gpu  # LoRA r=1, r=4 of ViT-S

Writes benchmarks/results/accuracy-<name or device>.{md,csv,png} (``-quick`` for --quick).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import random
import re
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

from glora.search import Budget, LayoutOps, strategy_name
from glora.search.report import markdown_table
from glora.spaces import DEFAULT_TARGETS, Layout
from glora.supernet import GLoRAConfig, set_layout, wrap
from machine import machine_info, machine_tag

from glora.backbone import EMBEDDED, classifier_name, load_backbone
from glora.data import build_task
from glora.embedded_backbone import ensure_embedded_backbone
from glora.jobs.app import CONF_DIR  # registers the config schemas
from glora.run.io import write_json_atomic, write_text_atomic
from glora.stages.config import narrow
from glora.stages.search import SearchJobConfig, run_search
from glora.stages.train import TrainJobConfig as TrainConfig
from glora.stages.train import train_supernet
from glora.training import fit

log = logging.getLogger("accuracy")

LORA_RANKS = (1, 2, 4, 8)
ALPHA_R_RANKS = (1, 4)  # LoRA at alpha = r too, at the ranks of the default budgets (r=8 is alpha 8 already)
DEFAULT_LRS = (1e-3, 3e-3, 1e-2)
DEFAULT_BUDGETS = (4096, 16384)  # LoRA r=1 and r=4 on the embedded backbone's targets


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


# ---- one run ------------------------------------------------------------------------------------
def run_method(name: str, build, cfg: TrainConfig, task: str, seed: int, lr: float, splits: tuple[str, str], run_dir: Path) -> dict:
    """Train one method on one task with one seed and lr on ``splits`` (train, eval); a
    finished run is read back from its ``result.json`` (runs are short: an interrupted one
    starts over, without per-epoch checkpoints or plots)."""
    done = run_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    data = replace(cfg.data, task=task)
    embedded = ensure_embedded_backbone(cfg.pretrain, cfg.paths.cache) if cfg.model.name == EMBEDDED else None
    model, spec = load_backbone(cfg.model, num_classes=0, embedded_dir=embedded, cache_root=cfg.paths.cache)
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
    started = time.time()
    history = fit(model, task_data, replace(cfg.optim, lr=lr), trainer, splits)
    row = {"task": task, "method": name, "seed": seed, "lr": lr, "eval_split": splits[1], "adapter_params": adapter, "head_params": head,
           "acc": history[-1][f"{splits[1]}/acc"], "train_acc": history[-1]["train/acc"], "seconds": round(time.time() - started, 1)}
    write_json_atomic(done, row)
    return row


def searched_layouts(cfg, task: str, budgets: list[int], work: Path, supernet_epochs: int | None = None) -> dict[int, dict]:
    """The pipeline's stages for one task: supernet on train, search on val per budget."""
    data = replace(cfg.data, task=task)
    supernet_dir = work / task / "supernet"
    trainer = replace(cfg.trainer, epochs=supernet_epochs or cfg.trainer.epochs)
    train_supernet(narrow(cfg, TrainConfig, data=data, trainer=trainer), supernet_dir)
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


def method_list(cfg, space, budgets: list[int], found: dict[int, dict], seed: int, peft_glora_ranks: list[int]) -> dict:
    """Every method's model builder for one seed (random layouts are drawn per seed)."""
    up = cfg.glora
    out = {"probe": head_only, "full_ft": full_ft,
           **{f"lora_r{r}": peft_lora(r) for r in LORA_RANKS},
           **{f"lora_r{r}_alpha_r": peft_lora(r, r) for r in ALPHA_R_RANKS},
           **{f"peft_glora_r{r}": peft_glora(r) for r in peft_glora_ranks},
           **{f"glora_lora_r{r}": glora_layout(lora_layout(space, r), seed, up) for r in LORA_RANKS if r in space.ranks}}
    for budget in budgets:
        out[f"glora_random_{budget}"] = glora_layout(random_layout(space, budget, seed), seed, up)
        out[f"glora_search_{budget}"] = glora_layout(lambda _m, path=found[budget]["layout"]: Layout.load(path), seed, up)
    return {name: out[name] for name in sorted(out, key=_run_order)}


def chosen(names, patterns: list[str] | None) -> list[str]:
    """The method names matching any of ``patterns`` (shell globs; None: all), in run order."""
    return [n for n in names if patterns is None or any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def _run_order(name: str) -> tuple:
    """The searched layouts, then the LoRA and random ones they are compared with, then the
    rest (budgets in numeric order): a cut-short run still holds the comparisons the
    benchmark exists for, and the tables list methods in the same order."""
    families = ("glora_search_", "lora_r1", "lora_r4", "glora_random_", "glora_lora_", "peft_glora_", "lora_r", "full_ft", "probe")
    budget = re.search(r"_(\d+)$", name)
    return next(i for i, prefix in enumerate(families) if name.startswith(prefix)), int(budget.group(1)) if budget else 0, name


def method_dir(task_dir: Path, name: str, found: dict[int, dict]) -> Path:
    """Where a method's runs are kept: a searched layout's under its hash, so a search that
    now picks another layout (another re-ranking, say) trains it anew."""
    budget = next((b for b in found if name == f"glora_search_{b}"), None)
    return task_dir / name / (Layout.load(found[budget]["layout"]).hash if budget is not None else "")


def benchmark_task(cfg, task: str, args: argparse.Namespace, work: Path) -> None:
    """Tune each method's lr on train/val (seed 0), then train+val -> test for every seed;
    the rows land in ``work/<task>/{tuning,final}.csv``, beside the rows of methods not run
    now (``--methods`` adds to a table, it does not cut it down)."""
    space = cfg.space.build()
    found = searched_layouts(cfg, task, args.budgets, work, args.supernet_epochs)
    names = chosen(method_list(cfg, space, args.budgets, found, 0, args.peft_glora_ranks), args.methods)
    tuning, final = _others(work / task / "tuning.csv", names), _others(work / task / "final.csv", names)
    for name in names:
        runs = method_dir(work / task, name, found)
        if len(args.lrs) > 1:
            tries = [run_method(name, method_list(cfg, space, args.budgets, found, 0, args.peft_glora_ranks)[name], cfg, task, 0, lr,
                                ("train", "val"), runs / f"tune-lr{lr:g}") for lr in args.lrs]
            tuning += tries
            lr = max(tries, key=lambda r: (r["acc"], -r["lr"]))["lr"]  # best val; a tie goes to the smaller lr
            log.info("%s %s: val acc %s -> lr %g", task, name, [round(r["acc"], 3) for r in tries], lr)
        else:
            lr = args.lrs[0]
        for seed in range(args.seeds):
            build = method_list(cfg, space, args.budgets, found, seed, args.peft_glora_ranks)[name]
            row = run_method(name, build, cfg, task, seed, lr, ("trainval", "test"), runs / f"lr{lr:g}" / f"seed{seed}")
            log.info("%s %s seed %d lr %g: test acc %.4f (%d + %d params, %.0f s)", task, name, seed, lr, row["acc"],
                     row["adapter_params"], row["head_params"], row["seconds"])
            final.append(row)
        write_text_atomic(work / task / "final.csv", pd.DataFrame(final).to_csv(index=False))
        if tuning:
            write_text_atomic(work / task / "tuning.csv", pd.DataFrame(tuning).to_csv(index=False))


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
    """Mean ± std over seeds per (method, task) with the lr each chose, and the mean over
    tasks per method (± std over seeds of that mean)."""
    per_task = runs.groupby(["method", "task"], sort=False).agg(
        adapter_params=("adapter_params", "mean"), head_params=("head_params", "mean"),
        mean=("acc", "mean"), std=("acc", "std"), lr=("lr", "first"))
    cells = per_task.apply(lambda r: f"{_cell(r['mean'], r['std'])} (lr {r['lr']:g})", axis=1).unstack("task")
    seed_means = runs.groupby(["method", "seed"], sort=False)["acc"].mean().groupby("method", sort=False)
    overall = seed_means.agg(["mean", "std"])
    params = per_task.groupby("method", sort=False)[["adapter_params", "head_params"]].mean().round().astype(int)
    table = params.join(cells).join(overall.apply(lambda r: _cell(r["mean"], r["std"]), axis=1).rename("overall"))
    table["overall_mean"] = overall["mean"].round(4)
    return table.loc[list(dict.fromkeys(runs["method"]))]


def verdict(table: pd.DataFrame, budgets: list[int], runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per budget: the searched layout against the best baseline of each family that fits
    the same budget (LoRA at either alpha, PEFT's uniform GLoRA, the random layout); with
    ``runs``, also the std over seeds of the paired difference (seed s against seed s, both
    averaged over tasks), which says whether a gap is more than seed noise."""
    seed_means = runs.groupby(["method", "seed"])["acc"].mean() if runs is not None else None
    rows = []
    for budget in budgets:
        name = f"glora_search_{budget}"
        if name not in table.index:
            continue
        ours = table.loc[name]
        fits = table[table["adapter_params"] <= budget]
        for family, prefix in (("PEFT LoRA", "lora_r"), ("GLoRA LoRA layout", "glora_lora_r"), ("PEFT GLoRA uniform", "peft_glora_"),
                               ("random layout", f"glora_random_{budget}")):
            rivals = fits[fits.index.str.startswith(prefix)]
            if len(rivals):
                best = rivals["overall_mean"].idxmax()
                rows.append({"budget": budget, "searched_params": int(ours["adapter_params"]), "searched": ours["overall_mean"],
                             "rival_family": family, "best_rival": best, "rival_params": int(rivals.loc[best, "adapter_params"]),
                             "rival": rivals.loc[best, "overall_mean"], "difference": round(ours["overall_mean"] - rivals.loc[best, "overall_mean"], 4),
                             **({"paired_std": round((seed_means[name] - seed_means[best]).std(), 4)} if seed_means is not None else {})})
    return pd.DataFrame(rows)


def _grid_edges(runs: pd.DataFrame, lrs: list[float]) -> str:
    """How many (method, task) lr choices sit at the grid's edges: a grid that binds."""
    if len(lrs) < 2:
        return ""
    picked = runs.groupby(["method", "task"])["lr"].first()
    return (f"Of the {len(picked)} lr choices, {(picked == max(lrs)).sum()} took the grid's largest ({max(lrs):g}) and "
            f"{(picked == min(lrs)).sum()} its smallest ({min(lrs):g}).")


def rerank_rows(work: Path, tasks: list[str], budgets: list[int]) -> pd.DataFrame:
    """Per search: the supernet's first vs the re-ranked winner, by stand-alone val accuracy."""

    def lr(row: dict) -> str:
        return f" (lr {row['standalone_lr']:g})" if "standalone_lr" in row else ""  # states from before the lr grid have none

    rows = []
    for task in tasks:
        for budget in budgets:
            path = work / task / f"search-{budget}" / "metrics.json"
            metrics = json.loads(path.read_text()) if path.is_file() else {}
            if not metrics.get("reranked"):
                continue
            first, won = metrics["reranked"][0], next(r for r in metrics["reranked"] if r["layout_hash"] == metrics["best_layout_hash"])
            rows.append({"task": task, "budget": budget, "candidates": len(metrics["reranked"]),
                         "supernet_first": f"{first['layout_hash']} ({first['trainable_params']:,})",
                         "its_val": f"{first['standalone_val_acc']:.4f}{lr(first)}",
                         "winner": f"{won['layout_hash']} ({won['trainable_params']:,})", "winner_val": f"{won['standalone_val_acc']:.4f}{lr(won)}"})
    return pd.DataFrame(rows)


def plot(runs: pd.DataFrame, path: Path, title: str) -> plt.Figure:
    """Accuracy vs trainable params, one line per family; returns the (closed) figure."""
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
    return fig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["count", "orientation", "texture"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", type=int, nargs="+", default=list(DEFAULT_BUDGETS))
    parser.add_argument("--lrs", type=float, nargs="+", default=list(DEFAULT_LRS), help="the lr grid every method chooses from on val")
    parser.add_argument("--peft-glora-ranks", type=int, nargs="*", default=[2])
    parser.add_argument("--methods", nargs="+", default=None,
                        help="run only the methods matching these globs, e.g. 'glora_*' lora_r1 probe (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="override trainer.epochs (default: the config's)")
    parser.add_argument("--supernet-epochs", type=int, default=None, help="the supernet's epochs (default: --epochs)")
    parser.add_argument("--quick", action="store_true", help="smoke backbone and search; checks the script runs")
    parser.add_argument("--no-report", action="store_true", help="run the tasks only (one process per task, then --report)")
    parser.add_argument("--report", action="store_true", help="only write the table from the tasks' finished rows")
    parser.add_argument("--name", default=None, help="results file name (default: the machine's tag)")
    parser.add_argument("--work", default="runs/bench-accuracy", help="run dirs (resumable)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the pipeline config, e.g. experiment=real_cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides = [*(["experiment=smoke"] if args.quick else []), *([f"trainer.epochs={args.epochs}"] if args.epochs else []), *args.overrides]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = OmegaConf.to_object(compose("pipeline", overrides=overrides))
    work = Path(args.work) / ("quick" if args.quick else "full")
    started = time.time()
    if not args.report:
        for task in args.tasks:
            benchmark_task(cfg, task, args, work)
    if not args.no_report:
        report(cfg, args, overrides, work, time.time() - started)


def report(cfg, args: argparse.Namespace, overrides: list[str], work: Path, seconds: float) -> None:
    runs = pd.concat([pd.read_csv(work / t / "final.csv") for t in args.tasks], ignore_index=True)
    cells = runs.groupby("method")[["task", "seed"]].apply(lambda g: len(g.drop_duplicates()))
    missing = sorted(cells[cells < len(args.tasks) * args.seeds].index)  # a cut-short run: left out, named
    runs = runs[~runs["method"].isin(missing)]
    runs = runs.loc[sorted(runs.index, key=lambda i: _run_order(runs.at[i, "method"]))].reset_index(drop=True)  # stable: tasks, seeds keep their order
    tuning = [work / t / "tuning.csv" for t in args.tasks if (work / t / "tuning.csv").is_file()]
    table = summarise(runs)
    wins = verdict(table, args.budgets, runs)
    reranks = rerank_rows(work, args.tasks, args.budgets)
    space = cfg.space.build()
    tag = args.name or (machine_tag() + ("-quick" if args.quick else ""))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"accuracy-{tag}.csv", runs.to_csv(index=False))
    if tuning:
        write_text_atomic(out / f"accuracy-{tag}-tuning.csv", pd.concat([pd.read_csv(p) for p in tuning]).to_csv(index=False))
    plot(runs, out / f"accuracy-{tag}.png", f"{cfg.model.name}: {', '.join(args.tasks)}, {args.seeds} seeds, lr tuned on val")
    wall = sum(pd.read_csv(p)["seconds"].sum() for p in tuning) + runs["seconds"].sum()
    text = "\n".join([
        f"# Accuracy: {cfg.model.name}, tuned protocol", "",
        f"Machine: {json.dumps(machine_info())}", "",
        (f"`python benchmarks/accuracy.py --tasks {' '.join(args.tasks)} --budgets {' '.join(map(str, args.budgets))} "
         f"--lrs {' '.join(f'{x:g}' for x in args.lrs)} --seeds {args.seeds}"
         f"{' --methods ' + ' '.join(args.methods) if args.methods else ''}"
         f"{f' --supernet-epochs {args.supernet_epochs}' if args.supernet_epochs else ''} {' '.join(overrides)}`"), "",
        (f"Protocol: every method trains {cfg.trainer.epochs} epochs (AdamW, warm-up {cfg.optim.warmup_epochs:g} epochs then cosine, "
         f"weight decay {cfg.optim.weight_decay:g}, batch {cfg.data.batch_size}); its lr is chosen from {list(args.lrs)} by the final "
         "val accuracy after training on train (seed 0); then it trains on train+val with that lr and reports the final epoch's test "
         f"accuracy for seeds 0..{args.seeds - 1}. GLoRA's per-support-tensor steps: {cfg.optim.describe_steps()}, up-factor "
         f"init {cfg.glora.up_init}, vector B on the inputs' {cfg.glora.vector_b}. Searched layouts: a {args.supernet_epochs or cfg.trainer.epochs}-epoch supernet on train (space ranks {list(space.ranks)}), "
         f"{strategy_name(cfg.search)} {cfg.search.population} x {cfg.search.generations} ranked on val{f' + {cfg.data.rank_images} held-out ranking images' if cfg.data.rank_images else ''}, seed 0, retrained per seed. "
         f"Training time in these rows: {wall:.0f} s. {_grid_edges(runs, args.lrs)}"), "",
        ("Test accuracy, mean ± std over seeds (the lr each method chose on val); `overall`: mean over tasks (± std over seeds "
         "of that mean). `adapter_params`: trainable params outside the head."), "",
        markdown_table(table.drop(columns="overall_mean").reset_index()), "",
        ("Searched layout against the best of each family that fits its budget (overall means; the best rival row is picked on "
         "test, which favours the rivals; `paired_std`: std over seeds of the seed-paired difference):"), "",
        markdown_table(wins) if len(wins) else ("(no rival rows beside the searched ones)" if table.index.str.startswith("glora_search_").any()
                                                else "(no searched layouts)"), "",
        *(["Re-ranking (`search.rerank`): the stand-alone accuracy (trained on train 800, scored on the search's ranking images: val 200 "
           f"+ {cfg.data.rank_images} held-out) of the supernet's first layout "
           f"and of the re-ranked winner (the top {cfg.search.rerank} and the LoRA layouts that fit, each trained "
           f"{cfg.search.rerank_epochs or cfg.trainer.epochs} epochs at "
           f"{'its best lr of ' + str(list(cfg.search.rerank_lrs)) if cfg.search.rerank_lrs else f'lr {cfg.optim.lr:g}'}):", "",
           markdown_table(reranks), ""] if len(reranks) else []),
        f"![accuracy vs params](accuracy-{tag}.png)", "",
        *([f"Not in the table (not run on every task and seed): {', '.join(missing)}.", ""] if missing else []),
    ])
    write_text_atomic(out / f"accuracy-{tag}.md", text)
    print(text)


if __name__ == "__main__":
    main()
