"""Bad input and hostile environments, tried as a user would (console scripts, smoke
configs): for each case, the exit code, whether a stack trace reached the user, and the
one line they see. Writes ``benchmarks/results/bad-inputs-cpu.md``.

    python benchmarks/bad_inputs.py            # ~3 min on 2 CPU cores
    python benchmarks/bad_inputs.py --cases epochs=0 --out /tmp/x   # the cases whose name holds a string
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from machine import machine_info
from PIL import Image

from glora.run.io import write_text_atomic
from glora.search.report import markdown_table

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str, cwd: Path) -> tuple[int, str]:
    proc = subprocess.run([str(BIN / script), *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def verdict(rc: int, out: str, expect_ok: bool) -> tuple[str, str]:
    errors = [line.split("] - ", 1)[-1] for line in out.splitlines() if "ERROR" in line or line.startswith(("Key ", "Could not", "error:"))]
    if "Traceback" in out:
        return "trace", out.strip().splitlines()[-1]
    if rc == 0:
        return ("ok" if expect_ok else "silent accept"), ""
    return ("one line" if len(errors) == 1 or (errors and errors[0].startswith("Could not")) else f"{len(errors)} lines"), (errors[0] if errors else out.strip().splitlines()[-1])


def folder(root: Path, classes: int = 2, corrupt: str | None = None) -> Path:
    for split in ("train", "val", "test"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(4):
                Image.new("RGB", (16, 16), (60 * c, 20 * i, 0)).save(root / split / f"c{c}" / f"{i}.png")
    if corrupt:
        (root / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="*", default=None, help="run only the cases whose name contains one of these strings")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder bad-inputs-cpu.md goes to")
    args = parser.parse_args(argv)
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="glora-bad-"))
    cache = f"paths.cache={work / 'cache'}"
    smoke = ["experiment=smoke", cache]
    rc, out = run("glora-train", *smoke, "trainer.epochs=3", "trainer.stop_after_epochs=1", f"hydra.run.dir={work / 'train'}", cwd=work)
    assert rc == 0, out[-2000:]
    rc, out = run("glora-search", *smoke, f"supernet={work / 'train'}", f"hydra.run.dir={work / 'search'}", cwd=work)
    assert rc == 0, out[-2000:]
    bad_train = folder(work / "badtrain", corrupt="train/c1/2.png")
    bad_test = folder(work / "badtest", corrupt="test/c0/1.png")
    one_class = folder(work / "oneclass", classes=1)
    blocker = work / "a-file"
    blocker.write_text("x")
    layout = str(work / "search" / "layout.json")
    cases = [  # (issue item, case, script, args, a success is right)
        ("2 resume", "glora-search resume=<dir> alone", "glora-search", [f"resume={work / 'search'}"], True),
        ("2 resume", "training stopped at epoch 1 of 3, resumed with no override", "glora-train", [f"resume={work / 'train'}"], True),
        ("2 resume", "resume with an override that changes the run (data.task=digits)", "glora-train", [f"resume={work / 'train'}", "data.task=digits"], False),
        ("2 resume", "resume=A hydra.run.dir=B", "glora-train", [f"resume={work / 'train'}", f"hydra.run.dir={work / 'B'}"], False),
        ("5 one dir", "a second job into a dir that holds a run", "glora-train", [*smoke, f"hydra.run.dir={work / 'train'}"], False),
        *[("3 values", o, "glora-train", [*smoke, f"paths.runs={work / 'r'}", o], False) for o in (
            "trainer.epochs=0", "trainer.epochs=-3", "data.batch_size=0", "optim.lr=-1", "data.eval_batch_size=0",
            "trainer.label_smoothing=1.5", "optim.weight_decay=-1", "data.num_workers=-1", "trainer.max_steps=0")],
        *[("3 values", o, "glora-search", [*smoke, f"supernet={work / 'train'}", f"paths.runs={work / 'r'}", o], False) for o in (
            "search.population=0", "search.generations=0", "search.top_k=60", "search.mutation_prob=5", "search.crossover=-1",
            "search.mutation=-1", "search.budget=-5", "search.min_params=-1", "search=random search.top_k=3")],
        ("3 values", "ImageFolder with one class", "glora-train", [*smoke, f"paths.runs={work / 'r'}", "data=imagefolder", f"data.root={one_class}"], False),
        ("4 images", "corrupt PNG in train (num_workers=2)", "glora-train", [*smoke, f"paths.runs={work / 'r'}", "data=imagefolder", f"data.root={bad_train}"], False),
        ("4 images", "corrupt test image, glora-retrain", "glora-retrain", [*smoke, f"paths.runs={work / 'r'}", f"layout={layout}", "data=imagefolder", f"data.root={bad_test}"], False),
        ("6 environment", "unwritable paths.cache", "glora-train", ["experiment=smoke", f"paths.cache={blocker / 'cache'}", f"paths.runs={work / 'r'}"], False),
        ("6 environment", "trainer.device=cuda without a GPU", "glora-train", [*smoke, f"paths.runs={work / 'r'}", "trainer.device=cuda"], False),
    ]
    if args.cases is not None:
        cases = [c for c in cases if any(s in c[1] for s in args.cases)]
    rows = []
    for item, case, script, case_args, expect_ok in cases:
        rc, out = run(script, *(a for arg in case_args for a in arg.split(" ")), cwd=work)
        kind, message = verdict(rc, out, expect_ok)
        rows.append({"issue item": item, "case": case, "exit": rc, "outcome": kind, "what the user sees": message.replace("|", "/")[:220]})
        print(rows[-1], flush=True)
    # item 7: corrupt tensor bytes, corrupt state, file modes, where the files are
    weights = work / "train" / "supernet.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-64] ^= 0xFF
    weights.write_bytes(bytes(blob))
    rc, out = run("glora-search", *smoke, f"supernet={work / 'train'}", f"paths.runs={work / 'r'}", cwd=work)
    rows.append({"issue item": "7 smaller", "case": "a tensor byte flipped inside supernet.safetensors", "exit": rc, "outcome": verdict(rc, out, False)[0],
                 "what the user sees": verdict(rc, out, False)[1][:220]})
    state = next((work / "train").glob("supernet-state-*.pt"))
    state.write_bytes(b"PK\x03\x04 broken")
    weights.write_bytes(bytes(blob[:-64]) + bytes([blob[-64] ^ 0xFF]) + bytes(blob[-63:]))
    rc, out = run("glora-train", f"resume={work / 'train'}", "trainer.epochs=4", cwd=work)
    kind, message = verdict(rc, out, False)
    rows.append({"issue item": "7 smaller", "case": "corrupt training state on resume", "exit": rc, "outcome": kind + (" (advises weights_only=False!)" if "weights_only" in out else ""),
                 "what the user sees": message[:220]})
    modes = sorted({oct(p.stat().st_mode & 0o777) for p in (work / "search").iterdir() if p.is_file() and not p.name.startswith(".")})
    rows.append({"issue item": "7 smaller", "case": f"result file modes under umask {oct(os.umask(0o022))}", "exit": 0, "outcome": "ok" if modes == ["0o644"] else "wrong",
                 "what the user sees": ", ".join(modes)})
    table = pd.DataFrame(rows)
    counts = table["outcome"].value_counts().to_dict()
    text = "\n".join([
        "# Bad input and hostile environments", "", f"Machine: {json.dumps(machine_info())}", "",
        f"`python benchmarks/bad_inputs.py`: {len(table)} cases through the console scripts (smoke configs), {time.time() - started:.0f} s. "
        f"Outcomes: {json.dumps(counts)}. `ok` is a case that must succeed (a resume); `one line` is exit 1 with one error line "
        "naming the field and the fix; `trace` or `silent accept` would be defects.", "",
        markdown_table(table), "",
    ])
    write_text_atomic(Path(args.out) / "bad-inputs-cpu.md", text)
    print(text)


if __name__ == "__main__":
    main()
