"""Size of a searched layout as a PEFT GLoRA adapter beside our adapter.safetensors.

PEFT's GLoRA takes one form per support-tensor family for every layer, so ``to_peft``
writes a per-layer layout in the smallest PEFT form that holds every form it uses: lower
ranks, vectors and constants are padded up to it, and a family PEFT spells ``none`` keeps a
zero buffer (out x in for A and B). Per budget of the embedded default backbone (space
``large``), a random budget-legal layout and GLoRA's LoRA layout are exported both ways;
the table has both files' bytes, PEFT's zero-buffer bytes, and the max logit difference
between PEFT's loaded model and ours (the export is exact, so it is rounding only).
Writes ``benchmarks/results/peft-size-<machine>.md``.

    python benchmarks/peft_size.py                  # budgets 4096 16384 20000 (the embedded suite's and the pipeline default)
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch
from peft import PeftModel
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_tag  # noqa: E402

from glora.backbones import create_model  # noqa: E402
from glora.backbones.embedded import PretrainConfig  # noqa: E402
from glora.run.io import write_text_atomic  # noqa: E402
from glora.search import Budget, LayoutOps  # noqa: E402
from glora.search.report import markdown_table  # noqa: E402
from glora.spaces import Layout, Space  # noqa: E402
from glora.supernet import peft_forms, save_adapter, set_layout, support_parameters, to_peft, wrap  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def backbone(recipe: PretrainConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(recipe.name, 10, **recipe.kwargs).eval()


def measure(layout_name: str, layers: dict, ops: LayoutOps, recipe: PretrainConfig, space: Space, folder: Path) -> dict:
    model = wrap(backbone(recipe), space, modules_to_train=("head",))
    layout = set_layout(model, ops.layout(layers))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # trained-looking support tensors: nothing in the file is zero by chance
        for p in support_parameters(model):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    ours = save_adapter(folder / f"{layout_name}.safetensors", model, layout)
    peft_dir = to_peft(model, layout, folder / layout_name)
    with safe_open(str(peft_dir / "adapter_model.safetensors"), "pt") as handle:
        zeros = sum(math.prod(handle.get_slice(k).get_shape()) for k in handle.keys() if k.endswith(".zeros"))
    x = torch.randn(8, 3, recipe.kwargs["img_size"], recipe.kwargs["img_size"], generator=gen)
    with torch.no_grad():
        diff = (model(x) - PeftModel.from_pretrained(backbone(recipe), str(peft_dir))(x)).abs().max().item()
    forms = peft_forms(layout)
    return {"layout": layout_name, "trainable_params": layout.trainable_params,
            "peft_config": f"A_B {forms['config_A_B']}, C {forms['config_C']}, D_E {forms['config_D_E']}, r {forms['r']}",
            "ours_bytes": ours.stat().st_size, "peft_bytes": (peft_dir / "adapter_model.safetensors").stat().st_size,
            "peft_zero_buffer_bytes": 4 * zeros, "max_logit_diff": f"{diff:.1e}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[4096, 16384, 20000])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    recipe, space = PretrainConfig(), Space.preset("large")
    template = Layout.sample(wrap(backbone(recipe), space), space, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets:
            ops = LayoutOps(template, Budget(budget))
            rng = random.Random(budget)
            candidates = {"random": ops.random(rng), "glora_lora": ops.lora_layouts(rng)[0]}
            for name, layers in candidates.items():
                rows.append({"budget": budget, **measure(f"{name}-{budget}", layers, ops, recipe, space, Path(tmp))})
    table = pd.DataFrame(rows)
    table["peft_over_ours"] = [f"{p / o:.1f}x" for p, o in zip(table["peft_bytes"], table["ours_bytes"])]
    text = "\n".join([
        "# PEFT GLoRA adapter size beside adapter.safetensors (embedded default backbone, space large)", "",
        f"Machine: {json.dumps(machine_info())}", "", f"`python benchmarks/peft_size.py --budgets {' '.join(map(str, args.budgets))}`", "",
        "Per budget, a random budget-legal layout and GLoRA's LoRA layout (B = LoRA_r, the rest none, at the largest rank that fits; repaired to the budget when none does), exported by "
        "`glora.supernet.save_adapter` (ours: the used slices and the head) and by `glora.supernet.to_peft` (PEFT's "
        "`save_pretrained`: every layer in one form; lower ranks, vectors and constants padded up to it, and a family PEFT "
        "spells `none` stored as a zero buffer). `max_logit_diff`: PEFT's loaded model against ours on 8 images.", "",
        markdown_table(table), "",
    ])
    write_text_atomic(Path(args.out) / f"peft-size-{machine_tag()}.md", text)
    print(text)


if __name__ == "__main__":
    main()
