"""Which supernet recipe learns? Supernet training variants (learning-rate multipliers per
support tensor, up-factor init, length) compared on *validation* data only: the mean val
accuracy of random layouts on the trained supernet, the val accuracy of the LoRA layout
(B = LoRA_r everywhere) it inherits, and the best of a small evolution. Writes
``benchmarks/results/recipe-<machine>.md``.

    python benchmarks/recipe.py --overrides experiment=real_gpu data.task=mnist model.checkpoint=...
    python benchmarks/recipe.py --overrides data.task=count trainer.epochs=20      # embedded, CPU
    python benchmarks/recipe.py --standalone --overrides data.task=count trainer.epochs=20

``--standalone``: no supernet; fixed layouts (LoRA_1 on B; A vector + B LoRA_1 + E vector;
or layout JSON files, ``--layout-files NAME=PATH``, e.g. the layouts a search found)
trained alone on train and scored on val, for every lr of a grid and every multiplier
variant of ``STEP_VARIANTS`` (lr multipliers or relative steps): which per-tensor step sizes let a
fixed layout learn.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from machine import machine_info, machine_tag
from omegaconf import OmegaConf

from glora.jobs.app import CONF_DIR
from glora.run.device import pick_device
from glora.run.io import write_text_atomic
from glora.search import Budget, Evaluator, Evolution, LayoutOps, run_generations, timed, top_k
from glora.search.report import markdown_table
from glora.spaces import Layout
from glora.stages.setup import space_for
from glora.stages.train import load_trained, train_supernet
from glora.training import predict

ROOT = Path(__file__).resolve().parents[1]
MULT = ["optim.lr_mult.A=30", "optim.lr_mult.B=8", "optim.lr_mult.D=30"]
VARIANTS = {
    "default": [],
    "vector_b sum (before)": ["glora.vector_b=sum"],
    "ranks 8,4 only": ["space.ranks=[8,4]"],
    "ranks 8,4,2,1 + mult + xavier": ["space.ranks=[8,4,2,1]", *MULT, "glora.up_init=xavier"],
    "ranks + mult + xavier, 3x epochs": ["space.ranks=[8,4,2,1]", *MULT, "glora.up_init=xavier", "trainer.epochs=60"],
    "lr 1e-4": ["optim.lr=1e-4"],
    "no C": ["space.options.C=[none]"],
    "no C, A/D lora or none": ["space.options.C=[none]", "space.options.A=[lora,none]", "space.options.D=[none]"],
    "mult A30 B8 D30": ["optim.lr_mult.A=30", "optim.lr_mult.B=8", "optim.lr_mult.D=30"],
    "mult + xavier": ["optim.lr_mult.A=30", "optim.lr_mult.B=8", "optim.lr_mult.D=30", "glora.up_init=xavier"],
}


# Per-tensor step variants: lr multipliers (``optim.lr_mult``), or for A / D a step relative to each
# layer's mean|W0| / mean|b0| (``optim.relative_step``). On the embedded ViT (mean|W0| 0.026, mean|b0|
# 0.010) "A30 D30" is about "relative A0.75 D0.3", and "A10 D10" about "relative A0.25 D0.1".
STEP_VARIANTS = {"no multipliers": {"lr_mult": {"A": 1, "D": 1}}, "A30 D30": {"lr_mult": {"A": 30, "D": 30}},
                 "A10 D10": {"lr_mult": {"A": 10, "D": 10}},
                 "A30 B4 D30": {"lr_mult": {"A": 30, "B": 4, "D": 30}}, "A30 B8 D30": {"lr_mult": {"A": 30, "B": 8, "D": 30}},
                 "relative A0.75 D0.3": {"relative_step": {"A": 0.75, "D": 0.3}},
                 "relative A0.25 D0.1": {"relative_step": {"A": 0.25, "D": 0.1}}}
STANDALONE_LAYOUTS = {"B=LoRA_1": {"B": "LoRA_1"}, "A LoRA_1, B LoRA_1, D vector": {"A": "LoRA_1", "B": "LoRA_1", "D": "vector"},
                      "A vector, B LoRA_1, E vector": {"A": "vector", "B": "LoRA_1", "E": "vector"},
                      "A vector, B LoRA_1, D vector": {"A": "vector", "B": "LoRA_1", "D": "vector"}}


def _slug(name: str) -> str:
    """A layout or variant name as a file name."""
    return name.replace(" ", "_").replace(",", "")


def standalone(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from accuracy import glora_layout, run_method

    from glora.backbones import EMBEDDED, load_backbone
    from glora.backbones.embedded import ensure_embedded_backbone
    from glora.supernet import LrMultipliers, RelativeSteps

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = OmegaConf.to_object(compose("train", overrides=args.overrides))
    embedded = ensure_embedded_backbone(cfg.pretrain, cfg.paths.cache) if cfg.model.name == EMBEDDED else None
    model, _ = load_backbone(cfg.model, num_classes=0, embedded_dir=embedded, cache_root=cfg.paths.cache)
    space = space_for(cfg.space, cfg.model.name)
    rows, started = [], time.time()
    files = dict(item.split("=", 1) for item in args.layout_files)  # NAME=PATH: e.g. the layouts a search found
    for layout_name in [*args.layouts, *files]:
        if layout_name in files:
            path = Path(files[layout_name])
        else:
            path = Path(args.work) / "layouts" / f"{_slug(layout_name)}.json"
            Layout.uniform(model, space, **STANDALONE_LAYOUTS[layout_name]).save(path)
        for variant in args.steps:
            steps = STEP_VARIANTS[variant]
            run_cfg = replace(cfg, optim=replace(cfg.optim, lr_mult=LrMultipliers(**steps.get("lr_mult", {})),
                                                 relative_step=RelativeSteps(**steps.get("relative_step", {}))))
            for lr in args.lrs:
                build = glora_layout(lambda _m, p=path: Layout.load(p), cfg.trainer.seed, cfg.glora)
                row = run_method(layout_name, build, run_cfg, cfg.data.task, cfg.trainer.seed, lr, ("train", "val"),
                                 Path(args.work) / f"{_slug(layout_name)}-{_slug(variant)}-lr{lr:g}")
                rows.append({"layout": layout_name, "params": row["adapter_params"], "multipliers": variant, "lr": lr,
                             "val_acc": row["acc"], "train_acc": round(row["train_acc"], 4)})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows).pivot_table(index=["layout", "params", "multipliers"], columns="lr", values="val_acc").reset_index()
    table.columns = [c if isinstance(c, str) else f"val @ lr {c:g}" for c in table.columns]
    tag = machine_tag(pick_device("auto"))
    text = "\n".join([
        "# Step sizes for fixed layouts, on validation data", "", f"Machine: {json.dumps(machine_info())}", "",
        f"`python benchmarks/recipe.py --standalone --layouts {' '.join(repr(v) for v in args.layouts)} "
        f"--steps {' '.join(repr(v) for v in args.steps)} --lrs {' '.join(f'{x:g}' for x in args.lrs)}"
        f"{' --layout-files ' + ' '.join(args.layout_files) if args.layout_files else ''} --overrides {' '.join(args.overrides)}`: "
        "each layout trained alone from the "
        f"backbone on train ({cfg.trainer.epochs} epochs, seed {cfg.trainer.seed}), final val accuracy (200 images). "
        f"{time.time() - started:.0f} s.", "", markdown_table(table), "",
    ])
    write_text_atomic(Path(args.out) / f"recipe-standalone-{args.name or tag}.md", text)
    print(text)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--overrides", nargs="*", default=[])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--budget", type=int, default=20000)
    parser.add_argument("--work", default="runs/bench-recipe")
    parser.add_argument("--quick", action="store_true", help="5 random layouts and no search: the supernet's own learning only")
    parser.add_argument("--standalone", action="store_true", help="fixed layouts alone: step-size variants x an lr grid")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--layouts", nargs="*", default=list(STANDALONE_LAYOUTS), help="--standalone: which layouts")
    parser.add_argument("--layout-files", nargs="*", default=[], help="--standalone: more layouts as NAME=PATH (layout JSON)")
    parser.add_argument("--steps", nargs="+", default=list(STEP_VARIANTS), help="--standalone: which multiplier variants")
    parser.add_argument("--name", default=None, help="results file suffix (default: the machine's tag)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder the results file goes to")
    args = parser.parse_args()
    if args.standalone:
        return standalone(args)
    rows, started = [], time.time()
    for name in args.variants:
        extra = VARIANTS[name]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = OmegaConf.to_object(compose("train", overrides=[*args.overrides, *extra]))
        run = Path(args.work) / f"{name.replace(' ', '_')}-{int(time.time())}"
        tick = time.time()
        metrics = train_supernet(cfg, run)
        train_s = time.time() - tick
        device = pick_device(cfg.trainer.device)
        sn = load_trained(run, device)
        evaluate = Evaluator(sn.model, sn.task.loader("val"), device, predict)
        ops = LayoutOps(Layout.sample(sn.model, sn.space, seed=0), Budget(args.budget))
        rng = random.Random(0)
        randoms = [evaluate(ops.layout(ops.random(rng))) for _ in range(5 if args.quick else 20)]
        lora = {str(layers[next(iter(layers))][1]): evaluate(ops.layout(layers)) for layers in ops.lora_layouts(rng)}
        generations = 1 if args.quick else 4
        records = run_generations(Evolution(population=5 if args.quick else 20, generations=generations, budget=args.budget), ops,
                                  timed(evaluate), show_progress=False)
        best = top_k(records, 1)[0]
        rows.append({"variant": name, "overrides": " ".join(extra) or "-", "supernet_val_acc": metrics.get("val/acc"),
                     "random_layouts_val_mean": sum(randoms) / len(randoms), "random_layouts_val_max": max(randoms),
                     **{f"lora ({r})_val": acc for r, acc in lora.items()}, "search_best_val": best.val_acc,
                     "search_best_params": best.params, "train_s": round(train_s, 1)})
        print(rows[-1], flush=True)
        write(rows, args, started)


def write(rows: list[dict], args: argparse.Namespace, started: float) -> None:
    """The table so far (written after every variant, so a cut-short run keeps its rows)."""
    tag = args.name or machine_tag(pick_device("auto"))
    text = "\n".join([
        "# Supernet recipes, on validation data", "", f"Machine: {json.dumps(machine_info())}", "",
        f"`python benchmarks/recipe.py --overrides {' '.join(args.overrides)}`: each variant trains the supernet on the "
        f"train split, then everything is scored on the val split (200 images): {5 if args.quick else 20} random layouts under "
        f"{args.budget:,} params, the LoRA layouts it inherits, and the best of a {'5 x 1' if args.quick else '20 x 4'} evolution. "
        f"{time.time() - started:.0f} s.", "",
        markdown_table(pd.DataFrame(rows)), "",
    ])
    out = Path(args.out) / f"recipe-{tag}.md"
    write_text_atomic(out, text)
    print(text)


if __name__ == "__main__":
    main()
