#!/usr/bin/env python
"""Speed: GLoRA's training step, inference and search against full fine-tuning, PEFT and a
naive GLoRA layer, all built from the same timm model in one process.

Training-step variants (zero_grad + forward + cross-entropy + backward + AdamW step):

* ``full_ft``      every parameter trainable;
* ``supernet``     ``glora.supernet.wrap`` (space "large"), a random A–E choice per layer per step;
* ``naive``        the same random sampling through ``NaiveGLoRALinear`` (below), which
                   materialises W = W0 + W0*A + B and b = b0 + b0*D + E + W0@C every step
                   as the published reference does;
* ``peft_lora``    PEFT LoRA r=8 on every block's qkv / proj / fc1 / fc2;
* ``probe``        head only;
* ``peft_glora``   PEFT's GLoRA with its default uniform config (A, B, C LoRA r=8; D, E constant);
* ``fixed_glora``  this project's layer with that same config as a fixed layout (the retrain step).

Inference (no grad, eval): ``plain`` timm model, ``merged`` GLoRA model, ``unmerged``
fixed layout (A, B, C LoRA_8; D, E vector), ``peft_lora`` and ``peft_glora`` unmerged.

Every step of every variant runs round-robin (one step each per round, order rotated), so
a slow spell of the machine hits all alike; median and min over the timed steps, ratios of
medians, and the median per-round ratio to the baseline are reported, with a reference
matmul timed every round to show the machine's noise.

Search: candidate layouts scored per second by the search's evaluator on the embedded
default's supernet, against passes of the plain (merged) model over the same validation
images; and the wall time of the default search (``glora-search``'s 50 x 20) there.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python benchmarks/speed.py --quick     # tiny config, checks it runs
    .venv/bin/python benchmarks/speed.py             # CPU: vit_small 224 px batch 8 fp32; GPU: vit_base batch 64 bf16

Writes benchmarks/results/speed-<device>.{md,json} (``cpu``, or the GPU's name, e.g. ``h100``).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from machine import machine_info, machine_tag

from glora.backbones import create_model
from glora.run.device import autocast
from glora.run.io import write_text_atomic
from glora.spaces import DEFAULT_TARGETS, TENSORS, Layout, Option, Space
from glora.supernet import glora_layers, merge, set_layout, vector_b_of, wrap
from glora.supernet.layer import VECTOR_B

TRAIN_VARIANTS = ("full_ft", "supernet", "naive", "peft_lora", "probe", "peft_glora", "fixed_glora")
INFER_VARIANTS = ("plain", "merged", "unmerged", "peft_lora", "peft_glora")
PEFT_GLORA_DEFAULT = {"A": "LoRA_8", "B": "LoRA_8", "C": "LoRA_8", "D": "constant", "E": "constant"}  # GloraConfig()'s defaults
UNMERGED = {"A": "LoRA_8", "B": "LoRA_8", "C": "LoRA_8", "D": "vector", "E": "vector"}
PROFILED = ("full_ft", "supernet", "peft_lora", "fixed_glora", "peft_glora")


# ---- the naive reference layer ------------------------------------------------------
class NaiveGLoRALinear(nn.Module):
    """GLoRA as the published reference computes it: every form of A–E is turned into a
    full tensor (``none`` into zeros), W and b are built every forward, one F.linear.

    Same parameters, shapes, initialisation and ``vector_b`` meaning (a vector / constant B
    row scaled by 1 / in_features under ``mean``) as ``glora.supernet.GLoRALinear``.
    """

    def __init__(self, base: nn.Linear, choices: dict[str, tuple[Option, ...]], rank: int, gen: torch.Generator, vector_b: str = "mean"):
        super().__init__()
        self.base_layer = base
        for p in base.parameters():
            p.requires_grad_(False)
        out_f, in_f = base.out_features, base.in_features
        self.out_features, self.in_features = out_f, in_f
        self.choices = tuple(choices[t] for t in TENSORS)
        self.generator = gen
        self.row_scale = VECTOR_B[vector_b](in_f)

        def up(rows: int, cols: int) -> nn.Parameter:
            w = torch.empty(rows, cols)
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            return nn.Parameter(w)

        self.Ad, self.Au = nn.Parameter(torch.zeros(out_f, rank)), up(rank, in_f)
        self.Bd, self.Bu = nn.Parameter(torch.zeros(out_f, rank)), up(rank, in_f)
        self.Cd, self.Cu = nn.Parameter(torch.zeros(in_f, rank)), up(rank, 1)
        self.D, self.E = nn.Parameter(torch.zeros(out_f)), nn.Parameter(torch.zeros(out_f))

    def draw(self) -> tuple[Option, ...]:
        """Uniform over each tensor's options, the same way ``ChoiceSampler.draw`` does."""
        u = torch.rand(len(self.choices), generator=self.generator).tolist()
        return tuple(opts[min(int(x * len(opts)), len(opts) - 1)] for x, opts in zip(u, self.choices))

    @staticmethod
    def _path(option: Option, down: Tensor, up: Tensor, shape: tuple[int, int]) -> Tensor:
        if option.kind == "lora":
            return down[:, : option.rank] @ up[: option.rank]
        if option.kind == "vector":
            return down[:, :1]
        if option.kind == "constant":
            return down[0, 0]
        return torch.zeros(shape, dtype=down.dtype, device=down.device)

    @staticmethod
    def _vec(option: Option, v: Tensor) -> Tensor:
        if option.kind == "vector":
            return v
        if option.kind == "constant":
            return v[0]
        return torch.zeros_like(v)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_choice(x, self.draw())

    def forward_choice(self, x: Tensor, choice: tuple[Option, ...]) -> Tensor:
        a, b, c, d, e = choice
        w0, b0 = self.base_layer.weight, self.base_layer.bias
        out_f, in_f = self.out_features, self.in_features
        A = self._path(a, self.Ad, self.Au, (out_f, in_f))
        B = self._path(b, self.Bd, self.Bu, (out_f, in_f))
        if b.kind in ("vector", "constant"):
            B = B * self.row_scale
        C = self._path(c, self.Cd, self.Cu, (in_f, 1))
        D, E = self._vec(d, self.D), self._vec(e, self.E)
        weight = w0 + w0 * A + B
        bias = (b0 + b0 * D + E) if b0 is not None else E
        bias = bias + (w0 @ C).squeeze(-1)
        return F.linear(x, weight, bias)


def naive_wrap(model: nn.Module, space: Space, seed: int, modules_to_train: tuple[str, ...]) -> nn.Module:
    gen = torch.Generator()
    gen.manual_seed(seed)
    rank = max(space.max_rank, 1)
    for name, shape in space.target_layers(model).items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, NaiveGLoRALinear(model.get_submodule(name), space.choices(shape), rank, gen))
    prefixes = tuple(p.rstrip(".") + "." for p in modules_to_train)
    for name, param in model.named_parameters():
        param.requires_grad_(".base_layer." not in name and (_is_support(name) or name.startswith(prefixes)))
    return model


def _is_support(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in {"Ad", "Au", "Bd", "Bu", "Cd", "Cu", "D", "E"}


def check_naive_matches(model_name: str, img_size: int, space: Space) -> float:
    """The naive layer and GLoRALinear must compute the same function (else the timing
    comparison is meaningless). Returns the largest relative difference seen."""
    torch.manual_seed(0)
    src = create_model(model_name, 10, img_size=img_size)
    name, shape = next(iter(space.target_layers(src).items()))
    base = src.get_submodule(name)
    with torch.no_grad():
        base.bias.normal_()
    ours = wrap(src, space, seed=0)
    layer = glora_layers(ours)[name]
    naive = NaiveGLoRALinear(layer.base_layer, space.choices(shape), space.max_rank, torch.Generator(), vector_b=vector_b_of(ours))
    with torch.no_grad():
        for p in layer.support_parameters():
            p.normal_(0, 0.05)
        for attr in ("Ad", "Au", "Bd", "Bu", "Cd", "Cu", "D", "E"):
            getattr(naive, attr).copy_(getattr(layer, attr))
    x = torch.randn(3, 5, shape.in_features)
    gen = torch.Generator()
    gen.manual_seed(1)
    worst = 0.0
    with torch.no_grad():
        for _ in range(40):
            u = torch.rand(5, generator=gen).tolist()
            choice = tuple(o[min(int(v * len(o)), len(o) - 1)] for v, o in zip(u, layer.choices))
            want, got = layer.forward_choice(x, choice), naive.forward_choice(x, choice)
            worst = max(worst, ((want - got).abs().max() / want.abs().max()).item())
    if worst > 1e-5:
        raise AssertionError(f"naive GLoRA layer disagrees with GLoRALinear (rel diff {worst:.2e})")
    return worst


# ---- building -------------------------------------------------------------------------
def create(args: argparse.Namespace) -> nn.Module:
    torch.manual_seed(args.seed)  # same weights for every variant
    return create_model(args.model, args.num_classes, img_size=args.img_size)


def head_trainable(model: nn.Module, wrapped: nn.Module | None = None) -> nn.Module:
    for p in model.get_classifier().parameters():
        p.requires_grad_(True)
    return wrapped if wrapped is not None else model


def peft_model(kind: str, model: nn.Module) -> nn.Module:
    import peft

    config = peft.LoraConfig(r=8, target_modules=DEFAULT_TARGETS) if kind == "lora" else peft.GloraConfig(r=8, target_modules=DEFAULT_TARGETS)
    return head_trainable(model, peft.get_peft_model(model, config))


def glora_fixed(args: argparse.Namespace, space: Space, choice: dict[str, str]) -> nn.Module:
    model = create(args)
    wrap(model, space, seed=0, modules_to_train=("head",))
    set_layout(model, Layout.uniform(model, space, **choice))
    return model


def build_train(variant: str, args: argparse.Namespace, space: Space) -> nn.Module:
    if variant == "fixed_glora":
        return glora_fixed(args, space, PEFT_GLORA_DEFAULT)
    model = create(args)
    if variant == "supernet":
        wrap(model, space, seed=0, modules_to_train=("head",))
    elif variant == "naive":
        naive_wrap(model, space, seed=0, modules_to_train=("head",))
    elif variant == "probe":
        for p in model.parameters():
            p.requires_grad_(False)
        head_trainable(model)
    elif variant in ("peft_lora", "peft_glora"):
        model = peft_model(variant.removeprefix("peft_"), model)
    elif variant != "full_ft":
        raise ValueError(variant)
    return model.train()


def build_infer(variant: str, args: argparse.Namespace, space: Space) -> nn.Module:
    if variant == "plain":
        return create(args)
    if variant in ("merged", "unmerged"):
        model = glora_fixed(args, space, UNMERGED)
        _perturb(model)
        return merge(model) if variant == "merged" else model
    model = peft_model(variant.removeprefix("peft_"), create(args))
    _perturb(model)
    return model


@torch.no_grad()
def _perturb(model: nn.Module) -> None:
    """Non-zero adapters, so no path is skipped for being zero."""
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(0.01 * torch.randn(p.shape, generator=gen).to(p.device, p.dtype))


# ---- timing -------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainRunner:
    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, lr: float, device: torch.device):
        self.model, self.x, self.y, self.device = model, x, y, device
        params = [p for p in model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        self.opt = torch.optim.AdamW(params, lr=lr)

    def __call__(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.device):
            loss = F.cross_entropy(self.model(self.x).float(), self.y)
        loss.backward()
        self.opt.step()
        return loss.item()


class InferRunner:
    def __init__(self, model: nn.Module, x: Tensor, device: torch.device):
        self.model, self.x, self.device = model.eval(), x, device

    def __call__(self) -> float:
        with torch.no_grad(), autocast(self.device):
            return self.model(self.x).float().sum().item()



class Reference:
    """One fixed 1024² matmul on the device: how fast the machine is right now."""

    def __init__(self, device: torch.device):
        self.device = device
        self.a, self.b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)

    def __call__(self) -> float:
        sync(self.device)
        t0 = time.perf_counter()
        torch.mm(self.a, self.b)
        sync(self.device)
        return (time.perf_counter() - t0) * 1e3


def time_round_robin(
    runners: dict[str, Callable[[], float]], args: argparse.Namespace, label: str, reference: Reference
) -> tuple[dict[str, list[list[float]]], list[float]]:
    """Per variant, per repeat, the per-step times in ms (index i of every variant is the
    same round), and the reference matmul time of every round."""
    names = list(runners)
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    ref: list[float] = []
    for rep in range(args.repeats):
        for name in names:
            for _ in range(args.warmup):
                runners[name]()
            times[name].append([])
        for i in range(args.steps):
            ref.append(reference())
            shift = (rep * args.steps + i) % len(names)
            for name in names[shift:] + names[:shift]:
                sync(args.device)
                t0 = time.perf_counter()
                value = runners[name]()  # .item() inside: the step has finished
                times[name][rep].append((time.perf_counter() - t0) * 1e3)
                if not math.isfinite(value):
                    raise FloatingPointError(f"{label}/{name}: non-finite value {value}")
        medians = "  ".join(f"{n} {statistics.median(times[n][rep]):.1f}" for n in names)
        print(f"  [{label}] repeat {rep + 1}/{args.repeats} median ms: {medians}", flush=True)
    return times, ref


def peak_memory_mb(runners: dict[str, Callable[[], float]], device: torch.device) -> dict[str, float | None]:
    """Per train variant, the most memory one step allocates on top of what was resident
    before it (activations, gradients, temporaries); only where the device reports it."""
    if device.type != "cuda":
        return {name: None for name in runners}
    out = {}
    for name, run in runners.items():
        run()
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        sync(device)
        out[name] = round((torch.cuda.max_memory_allocated(device) - before) / 2**20, 1)
    return out


def summarise(times: dict[str, list[list[float]]], baseline: str, second: str | None) -> pd.DataFrame:
    """Median and min over all timed steps; ratios of medians; and the median of the
    per-round ratio to ``baseline`` (robust to slow spells of the machine)."""
    base = [t for rep in times[baseline] for t in rep]
    rows = []
    for name, reps in times.items():
        flat = [t for rep in reps for t in rep]
        paired = statistics.median(t / b for t, b in zip(flat, base))
        rows.append({"variant": name, "median ms": statistics.median(flat), "min ms": min(flat), "paired": paired})
    df = pd.DataFrame(rows).set_index("variant")
    df[f"× {baseline}"] = df["median ms"] / df.loc[baseline, "median ms"]
    if second is not None:
        df[f"× {second}"] = df["median ms"] / df.loc[second, "median ms"]
    df[f"paired × {baseline}"] = df.pop("paired")
    return df.reset_index()


def to_markdown(df: pd.DataFrame) -> str:
    def fmt(v: object) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 100 else f"{v:.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if c == "variant" else "---:" for c in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v.item() if hasattr(v, "item") else v) for v in row) + " |")
    return "\n".join(lines)


def profile(runners: dict[str, Callable[[], float]], names: tuple[str, ...], rows: int, device: torch.device) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    out = []
    for name in names:
        run = runners[name]
        run()
        with torch_profile(activities=activities) as prof:
            run()
            run()
        out.append(f"### {name} (2 steps)\n\n```\n{prof.key_averages().table(sort_by=sort, row_limit=rows)}\n```\n")
    return "\n".join(out)


# ---- search -------------------------------------------------------------------------------
def embedded_supernet(args: argparse.Namespace) -> Path:
    """The embedded default's trained supernet: ``--supernet``, or trained once here
    (``glora-train``'s defaults; ``experiment=smoke`` with --quick)."""
    if args.supernet:
        return Path(args.supernet)
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from glora.jobs.app import CONF_DIR
    from glora.stages.train import train_supernet as train

    run_dir = Path(args.work) / f"supernet-{machine_tag(args.device)}{'-quick' if args.quick else ''}"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = OmegaConf.to_object(compose("train", overrides=["experiment=smoke"] if args.quick else []))
    if not (run_dir / "metrics.json").is_file():
        train(cfg, run_dir)
    return run_dir


def search_speed(args: argparse.Namespace) -> dict[str, object]:
    """Candidates scored per second by the search's evaluator vs plain-model passes over
    the same validation images (interleaved), and the default search's wall time."""
    from glora.search import Budget, Evaluator, Evolution, LayoutOps
    from glora.stages.search import SearchJobConfig, run_search
    from glora.stages.train import load_trained
    from glora.training import predict

    supernet_dir = embedded_supernet(args)
    device = args.device
    trained = load_trained(supernet_dir, device)
    evaluator = Evaluator(trained.model, trained.task.loader("val"), device, predict)
    default = Evolution()
    ops = LayoutOps(Layout.sample(trained.model, trained.space, seed=0), Budget(int(default.budget)))
    layouts = [ops.layout(ops.random(random.Random(i))) for i in range(args.candidates)]
    plain = copy.deepcopy(trained.model)
    set_layout(plain, layouts[0])
    merge(plain)

    @torch.no_grad()
    def plain_pass() -> int:
        correct = 0
        with autocast(device):
            for images, labels in evaluator.batches:
                correct += (plain(images).argmax(-1) == labels).sum().item()
        return correct

    evaluator(layouts[0]), plain_pass()  # warm-up
    cand, fwd = [], []
    for layout in layouts:
        t0 = time.perf_counter()
        evaluator(layout)
        cand.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain_pass()
        fwd.append(time.perf_counter() - t0)
    result: dict[str, object] = {
        "search_supernet": str(supernet_dir), "search_val_images": evaluator.count, "search_candidates_timed": len(layouts),
        "search_candidates_per_s": 1 / statistics.median(cand), "plain_forwards_per_s": 1 / statistics.median(fwd),
        "search_candidate_min_s": min(cand), "plain_forward_min_s": min(fwd), "search_default_s": None,
    }
    result["search_rate_vs_plain"] = result["search_candidates_per_s"] / result["plain_forwards_per_s"]
    if not args.no_default_search:
        search = Evolution(population=8, generations=3) if args.quick else default
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            found = run_search(SearchJobConfig(supernet=str(supernet_dir), search=search, trainer=trained.config.trainer), Path(tmp))
            result["search_default_s"] = time.perf_counter() - t0
            result["search_default_evaluations"] = found["evaluations"]
            result["search_default_config"] = f"population {search.population} x {search.generations} generations, {'+'.join(map(str, search.children))} children"
    return result


# ---- main ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--model", default=None, help="default: vit_small_patch16_224 on CPU, vit_base_patch16_224 on GPU")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=None, help="default: 8 on CPU, 64 on GPU")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=8, help="timed rounds per repeat; a round is one step of every variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each variant's timed steps")
    p.add_argument("--repeats", type=int, default=3, help="repeats of (warm-up + timed rounds)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--preset", default="large", help="Space.preset for the supernet variants")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("train", "infer", "search"), nargs="+", default=["train", "infer", "search"])
    p.add_argument("--candidates", type=int, default=30, help="layouts timed for the search rate")
    p.add_argument("--supernet", default=None, help="a glora-train run dir of the embedded default (else trained once)")
    p.add_argument("--no-default-search", action="store_true", help="skip timing the default 50 x 20 search")
    p.add_argument("--work", default="runs/bench-speed")
    p.add_argument("--profile", action="store_true", help=f"also profile two steps each of {', '.join(PROFILED)}")
    p.add_argument("--out", default=None, help="output stem (default benchmarks/results/speed-<device>[-quick])")
    p.add_argument("--quick", action="store_true", help="tiny config: vit_tiny, 64 px, batch 4, 3 steps, 2 repeats, smoke search")
    args = p.parse_args(argv)
    args.device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    gpu = args.device.type == "cuda"
    args.model = args.model or ("vit_base_patch16_224" if gpu else "vit_small_patch16_224")
    args.batch = args.batch or (64 if gpu else 8)
    if args.quick:
        args.model, args.img_size, args.batch = "vit_tiny_patch16_224", 64, 4
        args.steps, args.warmup, args.repeats, args.candidates = 3, 1, 2, 4
    if args.out is None:
        args.out = str(ROOT / "benchmarks" / "results" / f"speed-{machine_tag(args.device)}{'-quick' if args.quick else ''}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    space = Space.preset(args.preset)
    info = machine_info()
    config = {k: str(v) if isinstance(v, torch.device) else v for k, v in vars(args).items() if k != "out"}
    print(f"machine: {info}\nconfig: {config}", flush=True)
    reference = Reference(device)
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    payload: dict[str, object] = {"device": machine_tag(device), "model": args.model, "batch": args.batch, "img_size": args.img_size,
                                  "precision": precision, "machine": info, "config": config}
    sections, refs = [], []

    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=gen).to(device)
    y = torch.randint(0, args.num_classes, (args.batch,), generator=gen).to(device)

    if "train" in args.only:
        rel = check_naive_matches(args.model, args.img_size, space)
        print(f"naive layer matches GLoRALinear (max rel diff {rel:.1e})", flush=True)
        runners = {v: TrainRunner(build_train(v, args, space).to(device), x, y, args.lr, device) for v in TRAIN_VARIANTS}
        times, ref = time_round_robin(runners, args, "train", reference)
        refs += ref
        df = summarise(times, "full_ft", "peft_glora")
        df.insert(3, "× peft_lora", df["median ms"] / df.set_index("variant").loc["peft_lora", "median ms"])
        df["trainable params"] = df["variant"].map({v: r.trainable for v, r in runners.items()})
        memory = peak_memory_mb(runners, device)
        if device.type == "cuda":
            df["peak MiB"] = df["variant"].map(memory)
        median = df.set_index("variant")["median ms"]
        payload.update({
            "supernet_step_ms": median["supernet"], "full_ft_step_ms": median["full_ft"], "peft_lora_step_ms": median["peft_lora"],
            "peft_glora_step_ms": median["peft_glora"], "fixed_glora_step_ms": median["fixed_glora"], "naive_glora_step_ms": median["naive"],
            "probe_step_ms": median["probe"], "peak_memory_mb": memory, "naive_check_max_rel_diff": rel,
            "train": df.to_dict(orient="records"), "train_step_ms": times,
        })
        sections.append("## Training step\n\n" + to_markdown(df))
        if args.profile:
            sections.append("## Profile\n\n" + profile(runners, PROFILED, 15, device))
        del runners

    if "infer" in args.only:
        runners = {v: InferRunner(build_infer(v, args, space).to(device), x, device) for v in INFER_VARIANTS}
        times, ref = time_round_robin(runners, args, "infer", reference)
        refs += ref
        df = summarise(times, "plain", None)
        median = df.set_index("variant")["median ms"]
        payload.update({
            "plain_infer_ms": median["plain"], "merged_infer_ms": median["merged"], "unmerged_infer_ms": median["unmerged"],
            "peft_lora_infer_ms": median["peft_lora"], "peft_glora_infer_ms": median["peft_glora"],
            "infer": df.to_dict(orient="records"), "infer_step_ms": times,
        })
        sections.append("## Inference forward (no grad, eval)\n\n" + to_markdown(df))
        del runners

    if "search" in args.only:
        found = search_speed(args)
        payload.update(found)
        lines = [
            (f"Supernet `{found['search_supernet']}` (embedded default), {found['search_val_images']} validation images, "
            f"{found['search_candidates_timed']} random layouts under 20,000 params, interleaved with plain passes."), "",
            "| measure | value |", "|---|---:|",
            f"| candidates scored per s (median) | {found['search_candidates_per_s']:.2f} |",
            f"| plain-model passes per s (median) | {found['plain_forwards_per_s']:.2f} |",
            f"| search rate / plain rate | {found['search_rate_vs_plain']:.3f} |",
        ]
        if found["search_default_s"] is not None:
            lines.append(f"| default search wall s ({found['search_default_config']}, {found['search_default_evaluations']} evaluations) | {found['search_default_s']:.1f} |")
        sections.append("## Search\n\n" + "\n".join(lines))

    info["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    header = (
        f"# Speed: {args.model}, {args.img_size}px, batch {args.batch}, {precision}, on {machine_tag(device)}\n\n"
        f"Space preset `{args.preset}` (ranks {list(space.ranks)}). {args.repeats} repeats × {args.steps} rounds (after "
        f"{args.warmup} warm-up steps per variant per repeat); each round runs one step of every variant, order rotated. "
        f"Median and min over all timed steps; `× X` = ratio of medians; `paired × X` = median over rounds of the "
        f"per-round ratio, which cancels slow spells of the machine.\n\n"
        f"Machine: {info['cpu']}, {info['cpu_count']} CPUs, torch threads {info['torch_threads']}, GPU {info['gpu']}; "
        f"torch {info['torch']}, timm {info['timm']}, peft {info['peft']}, Python {info['python']}; {info['date']}; "
        f"load average at start {info['loadavg_at_start'][0]:.2f}, at end {info['loadavg_at_end'][0]:.2f}.\n"
    )
    if refs:
        header += f"Reference 1024² matmul before every round: min {min(refs):.2f} ms, median {statistics.median(refs):.2f} ms, max {max(refs):.2f} ms.\n"
        if max(refs) > 1.5 * min(refs):
            header += "\n**The machine was not quiet during this run** (reference spread > 1.5×): trust `min ms` and the paired ratios over the medians.\n"
    payload["reference_matmul_ms"] = refs
    text = header + "\n" + "\n\n".join(sections) + "\n"
    print("\n" + text, flush=True)
    out = Path(args.out)
    write_text_atomic(out.with_suffix(".json"), json.dumps(payload, indent=2, default=str) + "\n")
    write_text_atomic(out.with_suffix(".md"), text)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
