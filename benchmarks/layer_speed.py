#!/usr/bin/env python
"""CPU training-step time of a small timm ViT: full fine-tuning vs the GLoRA supernet.

Variants, each built from the same ``timm.create_model(..., pretrained=False)`` weights:

* ``full_ft``         plain model, every parameter trainable;
* ``supernet``        ``supernet.wrap`` (preset "large"), a random choice per layer per forward;
* ``naive_supernet``  the same random sampling through a layer written here that always
                      materialises W = W0 + W0*A + B and b = b0 + b0*D + E + W0@C as full
                      tensors (as the published GLoRA reference does) and calls F.linear;
* ``fixed_layout``    the supernet with one fixed layout (A=B=C=LoRA_8, D=E=vector), the
                      retrain step.

One step = zero_grad + forward + cross-entropy + backward + AdamW step, fp32, train mode.
Variants run round-robin one step at a time (order rotated each round), so a slow spell of
a shared machine hits them alike; besides median and min, the per-round ratio to full_ft
is reported, and a fixed reference matmul timed each round shows how noisy the machine was.
A second, small table times the no-grad inference forward of the plain model against the
merged (``supernet.merge``) one, which must cost the same.

    .venv/bin/python benchmarks/layer_speed.py --quick      # tiny config, checks it runs
    .venv/bin/python benchmarks/layer_speed.py              # vit_small, 224 px, batch 8

Writes benchmarks/results/layer_speed-cpu.{md,json} (``-quick`` suffix for --quick).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from spaces import TENSORS, Layout, Option, Space  # noqa: E402
from supernet import glora_layers, merge, set_layout, wrap  # noqa: E402

VARIANTS = ("full_ft", "supernet", "naive_supernet", "fixed_layout")
FIXED = dict(A="LoRA_8", B="LoRA_8", C="LoRA_8", D="vector", E="vector")


# ---- the naive reference layer ------------------------------------------------------
class NaiveGLoRALinear(nn.Module):
    """GLoRA as the published reference computes it: every form of A–E is turned into a
    full tensor (``none`` into zeros), W and b are built every forward, one F.linear.

    Same parameters, shapes and initialisation as ``supernet.GLoRALinear``.
    """

    def __init__(self, base: nn.Linear, choices: dict[str, tuple[Option, ...]], rank: int, gen: torch.Generator):
        super().__init__()
        self.base_layer = base
        for p in base.parameters():
            p.requires_grad_(False)
        out_f, in_f = base.out_features, base.in_features
        self.out_features, self.in_features = out_f, in_f
        self.choices = tuple(choices[t] for t in TENSORS)
        self.generator = gen

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
    src = timm.create_model(model_name, pretrained=False, num_classes=10, img_size=img_size)
    name, shape = next(iter(space.target_layers(src).items()))
    base = src.get_submodule(name)
    with torch.no_grad():
        base.bias.normal_()
    ours = wrap(src, space, seed=0)
    layer = glora_layers(ours)[name]
    naive = NaiveGLoRALinear(layer.base_layer, space.choices(shape), space.max_rank, torch.Generator())
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


# ---- building and timing ------------------------------------------------------------
def create(args: argparse.Namespace) -> nn.Module:
    torch.manual_seed(args.seed)  # same weights for every variant
    return timm.create_model(args.model, pretrained=False, num_classes=args.num_classes, img_size=args.img_size)


def build_train(variant: str, args: argparse.Namespace, space: Space) -> nn.Module:
    model = create(args)
    if variant == "full_ft":
        pass
    elif variant == "supernet":
        wrap(model, space, seed=0, modules_to_train=("head",))
    elif variant == "naive_supernet":
        naive_wrap(model, space, seed=0, modules_to_train=("head",))
    elif variant == "fixed_layout":
        wrap(model, space, seed=0, modules_to_train=("head",))
        set_layout(model, Layout.uniform(model, space, **FIXED))
    else:
        raise ValueError(variant)
    return model.train()


class TrainRunner:
    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, lr: float):
        self.model, self.x, self.y = model, x, y
        params = [p for p in model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        self.opt = torch.optim.AdamW(params, lr=lr)

    def __call__(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss.item()


class InferRunner:
    def __init__(self, model: nn.Module, x: Tensor):
        self.model, self.x = model.eval(), x

    def __call__(self) -> float:
        with torch.no_grad():
            return self.model(self.x).sum().item()


_REF = (torch.randn(1024, 1024), torch.randn(1024, 1024))


def reference_ms() -> float:
    """One fixed 1024² fp32 matmul: how fast the machine is right now."""
    t0 = time.perf_counter()
    torch.mm(*_REF)
    return (time.perf_counter() - t0) * 1e3


def time_round_robin(
    runners: dict[str, Callable[[], float]], args: argparse.Namespace, label: str
) -> tuple[dict[str, list[list[float]]], list[float]]:
    """Per variant, per repeat, the per-step times in ms (index i of every variant is the
    same round), and the reference matmul time of every round.

    Each round runs one step of every variant, in an order rotated from round to round,
    so a slow spell of the machine hits all variants alike and per-round ratios cancel it.
    """
    names = list(runners)
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    reference: list[float] = []
    for rep in range(args.repeats):
        for name in names:
            for _ in range(args.warmup):
                runners[name]()
            times[name].append([])
        for i in range(args.steps):
            reference.append(reference_ms())
            shift = (rep * args.steps + i) % len(names)
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                value = runners[name]()
                times[name][rep].append((time.perf_counter() - t0) * 1e3)
                if not math.isfinite(value):
                    raise FloatingPointError(f"{label}/{name}: non-finite value {value}")
        medians = "  ".join(f"{n} {statistics.median(times[n][rep]):.0f}" for n in names)
        print(f"  [{label}] repeat {rep + 1}/{args.repeats} median ms: {medians}", flush=True)
    return times, reference


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
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 100 else f"{v:.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    try:
        import tabulate  # noqa: F401

        return df.to_markdown(index=False, floatfmt=".2f")
    except ImportError:
        cols = list(df.columns)
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if c == "variant" else "---:" for c in cols) + "|"]
        for row in df.itertuples(index=False):
            lines.append("| " + " | ".join(fmt(v.item() if hasattr(v, "item") else v) for v in row) + " |")
        return "\n".join(lines)


def machine() -> dict[str, object]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_at_start": os.getloadavg(),
    }


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def profile(runners: dict[str, Callable[[], float]], names: list[str], rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    out = []
    for name in names:
        run = runners[name]
        run()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
            run()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
        out.append(f"### {name} (2 steps)\n\n```\n{table}\n```\n")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_small_patch16_224")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=8, help="timed rounds per repeat; a round is one step of every variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each variant's timed steps")
    p.add_argument("--repeats", type=int, default=3, help="repeats of (warm-up + timed rounds)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--preset", default="large", help="Space.preset for the supernet variants")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-infer", action="store_true", help="skip the inference (plain vs merged) table")
    p.add_argument("--profile", action="store_true", help="also profile two steps each of full_ft, supernet, naive_supernet (torch.profiler)")
    p.add_argument("--out", default=None, help="output stem (default benchmarks/results/layer_speed-cpu[-quick])")
    p.add_argument("--quick", action="store_true", help="tiny config: vit_tiny, 64 px, batch 4, 3 steps, 2 repeats")
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.img_size, args.batch = "vit_tiny_patch16_224", 64, 4
        args.steps, args.warmup, args.repeats = 3, 1, 2
    if args.out is None:
        args.out = str(ROOT / "benchmarks" / "results" / ("layer_speed-cpu-quick" if args.quick else "layer_speed-cpu"))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    space = Space.preset(args.preset)
    info = machine()
    config = {k: v for k, v in vars(args).items() if k not in ("out",)}
    print(f"machine: {info}\nconfig: {config}", flush=True)

    rel = check_naive_matches(args.model, args.img_size, space)
    print(f"naive layer matches GLoRALinear (max rel diff {rel:.1e})", flush=True)

    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=gen)
    y = torch.randint(0, args.num_classes, (args.batch,), generator=gen)

    runners = {v: TrainRunner(build_train(v, args, space), x, y, args.lr) for v in VARIANTS}
    trainable = {v: r.trainable for v, r in runners.items()}
    train_times, train_ref = time_round_robin(runners, args, "train")
    train_df = summarise(train_times, "full_ft", "naive_supernet")
    train_df["trainable params"] = train_df["variant"].map(trainable)

    prof_text = profile(runners, ["full_ft", "supernet", "naive_supernet"], 15) if args.profile else ""
    del runners

    infer_df, infer_times, infer_ref = None, None, []
    if not args.no_infer:
        plain = create(args)
        fixed = _wrapped_fixed(args, space)
        merged = merge(_wrapped_fixed(args, space))
        infer = {"plain": InferRunner(plain, x), "fixed_layout (unmerged)": InferRunner(fixed, x), "merged": InferRunner(merged, x)}
        infer_times, infer_ref = time_round_robin(infer, args, "infer")
        infer_df = summarise(infer_times, "plain", None)

    ref = train_ref + infer_ref
    info["loadavg_at_end"] = os.getloadavg()
    noise = (
        f"Machine speed during the run (one 1024² fp32 matmul before every round): "
        f"min {min(ref):.1f} ms, median {statistics.median(ref):.1f} ms, max {max(ref):.1f} ms"
    )
    header = (
        f"# GLoRA layer speed, CPU training step\n\n"
        f"{args.model}, {args.img_size}px, batch {args.batch}, {args.num_classes} classes, fp32, train mode; "
        f"one step = zero_grad + forward + cross-entropy + backward + AdamW step. Space preset `{args.preset}` "
        f"(ranks {list(space.ranks)}); fixed layout A=B=C=LoRA_8, D=E=vector. {args.repeats} repeats × "
        f"{args.steps} rounds (after {args.warmup} warm-up steps per variant per repeat); each round runs one "
        f"step of every variant, order rotated. Median and min over all timed steps; `× X` = ratio of medians; "
        f"`paired × full_ft` = median over rounds of (step time / full_ft step time in the same round), "
        f"which cancels slow spells of the machine.\n\n"
        f"Machine: {info['cpu']}, {info['cpu_count']} CPUs, torch threads {info['torch_threads']}; "
        f"torch {info['torch']}, timm {info['timm']}, Python {info['python']}; {info['date']}.\n"
        f"{noise}; load average at start {info['loadavg_at_start'][0]:.2f}, at end {info['loadavg_at_end'][0]:.2f}.\n\n"
    )
    if max(ref) > 1.5 * min(ref):
        header += (
            "**The machine was not quiet during this run** (reference matmul spread > 1.5×): trust `min ms` "
            "and `paired × full_ft` over the medians, or rerun on an idle machine.\n\n"
        )
    text = header + "## Training step\n\n" + to_markdown(train_df) + "\n"
    if infer_df is not None:
        text += "\n## Inference forward (no grad, eval)\n\n" + to_markdown(infer_df) + "\n"
    if prof_text:
        text += "\n## Profile (self CPU time)\n\n" + prof_text
    print("\n" + text, flush=True)

    out = Path(args.out)
    payload = {
        "machine": info,
        "config": config,
        "naive_check_max_rel_diff": rel,
        "train": train_df.to_dict(orient="records"),
        "train_step_ms": train_times,
        "infer": None if infer_df is None else infer_df.to_dict(orient="records"),
        "infer_step_ms": infer_times,
        "reference_matmul_ms": {"train": train_ref, "infer": infer_ref},
    }
    write_atomic(out.with_suffix(".json"), json.dumps(payload, indent=2) + "\n")
    write_atomic(out.with_suffix(".md"), text)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


def _wrapped_fixed(args: argparse.Namespace, space: Space) -> nn.Module:
    model = create(args)
    wrap(model, space, seed=0, modules_to_train=("head",))
    set_layout(model, Layout.uniform(model, space, **FIXED))
    return model


if __name__ == "__main__":
    main()
