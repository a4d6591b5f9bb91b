"""Bad input and hostile environments, tried as a user would (console scripts, smoke
configs): for each case, the exit code, the outcome (clear / trace / silent / hang, or ok
for a case that must succeed), whether it behaved as described, and the one line the user
sees. Writes ``benchmarks/results/bad-inputs-cpu.md``.

    python benchmarks/bad_inputs.py            # ~9 min on 2 CPU cores
    python benchmarks/bad_inputs.py --cases epochs=0 --out /tmp/x   # the cases whose name holds a string

Each case runs with a timeout (``TIMEOUT`` s): a job still running then is killed (its
process group) and recorded as ``hang``. The runs the cases need (a supernet, a search, a
retrain, a finished 2-epoch supernet, a sweep, a SIGTERM-stopped run) are made once, on
first use, so ``--cases`` only builds what its cases need.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from machine import machine_info
from PIL import Image

from glora.run.io import write_text_atomic
from glora.search.report import markdown_table

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds a case may run before it counts as a hang
EXPECTED = {True: "ok", False: "clear"}


def run(script: str, *args: str, cwd: Path, timeout: float = TIMEOUT) -> tuple[int | None, str]:
    """``script args`` (a console script of this venv): its exit code and output; ``None``
    for the exit code of a job killed after ``timeout`` seconds."""
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a chatty job never blocks on a full pipe
        proc = subprocess.Popen([str(BIN / script), *args], stdout=log, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                                start_new_session=True)
        rc = wait(proc, timeout)
        log.seek(0)
        return rc, log.read()


def wait(proc: subprocess.Popen, timeout: float) -> int | None:
    """``proc``'s exit code, or ``None`` after killing its process group at ``timeout``."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the job and its data-loader workers (a session of their own)
        proc.wait()
        return None


def error_lines(out: str) -> list[str]:
    return [line.split("] - ", 1)[-1] for line in out.splitlines() if "ERROR" in line or line.startswith(("Key ", "Could not", "error:"))]


def verdict(rc: int | None, out: str, expect_ok: bool) -> tuple[str, str]:
    """The outcome and the line the user sees. ``clear``: refused (exit != 0) with one error
    line; ``trace``: a stack trace reached the user; ``silent``: a bad input accepted (exit 0);
    ``hang``: killed at the timeout; ``ok``: a case that must succeed did; ``failed``: it did not;
    ``N lines``: refused, but with N error lines."""
    last = (out.strip().splitlines() or [""])[-1]
    if rc is None:
        return "hang", f"(killed after {TIMEOUT} s) {last}"
    if "Traceback" in out:
        return "trace", last
    errors = error_lines(out)
    if expect_ok:
        return ("ok", "") if rc == 0 else ("failed", errors[0] if errors else last)
    if rc == 0:
        return "silent", ""
    if len(errors) == 1 or (errors and errors[0].startswith("Could not")):
        return "clear", errors[0]
    return f"{len(errors)} lines", " / ".join(errors) if errors else last


@dataclass
class Case:
    item: str
    name: str
    do: Callable[[], tuple[int | None, str]]  # runs the case: exit code (None: hang) and output
    expect_ok: bool = False
    expect: tuple[str, ...] = ()  # regexes the line the user sees must match (a refusal naming the field / file and the fix)
    rc: int | None = None  # the exit code it must end with (default: 0 for ok, 1 for a refusal)
    check: Callable[[int | None, str], list[str]] | None = None  # what else differed from the description (files, markers)
    lines: Callable[[str], str] | None = None  # the line(s) the user sees, where a refusal has several by design


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="*", default=None, help="run only the cases whose name contains one of these strings")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder bad-inputs-cpu.md goes to")
    args = parser.parse_args(argv)
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="glora-bad-"))
    cache = f"paths.cache={work / 'cache'}"
    smoke = ["experiment=smoke", cache]
    runs = f"paths.runs={work / 'r'}"

    def cli(script: str, *parts: str | Callable[[], str]) -> Callable[[], tuple[int | None, str]]:
        """A case that runs ``script``; a callable part is evaluated when the case runs (it builds what it names)."""
        def do() -> tuple[int | None, str]:
            resolved = [p() if callable(p) else p for p in parts]
            return run(script, *(a for arg in resolved for a in arg.split(" ")), cwd=work)
        return do

    def must(rc: int | None, out: str, what: str) -> None:
        assert rc == 0, f"{what} failed ({rc}):\n{out[-3000:]}"

    # ---- runs the cases start from, made on first use ------------------------------------
    @functools.cache
    def train() -> Path:  # stopped at epoch 1 of 3 (resumable)
        must(*run("glora-train", *smoke, "trainer.epochs=3", "trainer.stop_after_epochs=1", f"hydra.run.dir={work / 'train'}", cwd=work), "train")
        return work / "train"

    @functools.cache
    def search() -> Path:
        must(*run("glora-search", *smoke, f"supernet={train()}", f"hydra.run.dir={work / 'search'}", cwd=work), "search")
        return work / "search"

    @functools.cache
    def finished() -> Path:  # a finished 2-epoch supernet, never written to by a case
        must(*run("glora-train", *smoke, f"hydra.run.dir={work / 'finished'}", cwd=work), "finished train")
        return work / "finished"

    @functools.cache
    def retrain() -> Path:
        must(*run("glora-retrain", *smoke, f"layout={search() / 'layout.json'}", f"hydra.run.dir={work / 'retrain'}", cwd=work), "retrain")
        return work / "retrain"

    def blocked_cache() -> str:  # a cache folder under a file: it cannot be made
        (work / "a-file").write_text("x")
        return f"paths.cache={work / 'a-file' / 'cache'}"

    def layout() -> str:
        return str(search() / "layout.json")

    def folder(name: str, classes: int = 2, corrupt: str | None = None) -> Path:
        root = work / name
        for split in ("train", "val", "test"):
            for c in range(classes):
                (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
                for i in range(4):
                    Image.new("RGB", (16, 16), (60 * c, 20 * i, 0)).save(root / split / f"c{c}" / f"{i}.png")
        if corrupt:
            (root / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
        return root

    def vtab(name: str, labels=(0, 1, 2), test: bytes | None = None) -> Path:
        """A VTAB-1k folder (train800 / val200 / train800val200 / test lists); ``test`` replaces test.txt."""
        root = work / name
        (root / "images").mkdir(parents=True)
        rows = []
        for label in labels:
            for i in range(3):
                Image.new("RGB", (16, 16), (40 * label, 30 * i, 0)).save(root / "images" / f"{label}-{i}.png")
                rows.append(f"images/{label}-{i}.png {label}")
        for split in ("train800", "val200", "train800val200", "test"):
            (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
        if test is not None:
            (root / "test.txt").write_bytes(test)
        return root

    def vtab_arg(name: str, **kwargs) -> Callable[[], str]:
        return lambda: f"data.root={vtab(name, **kwargs)}"

    def layout_file(name: str, edit: Callable[[dict], str]) -> Callable[[], str]:
        """A copy of the search's layout.json, rewritten by ``edit`` (the dict in, the JSON text out)."""
        def make() -> str:
            path = work / "layouts" / f"{name}.json"
            path.parent.mkdir(exist_ok=True)
            path.write_text(edit(json.loads(Path(layout()).read_text())))
            return f"layout={path}"
        return make

    def with_value(key: str, text: str) -> Callable[[dict], str]:
        def edit(data: dict) -> str:
            data[key] = "@@VALUE@@"
            return json.dumps(data, indent=2).replace('"@@VALUE@@"', text)
        return edit

    def duplicate_layer(data: dict) -> str:
        first = next(iter(data["layers"]))
        text = json.dumps(data, indent=2)
        return text.replace('"layers": {', '"layers": {\n    ' + json.dumps(first) + ": " + json.dumps(data["layers"][first]) + ",", 1)

    def space_ranks(ranks) -> Callable[[dict], str]:
        def edit(data: dict) -> str:
            data["space"]["ranks"] = ranks
            return json.dumps(data, indent=2)
        return edit

    def adapter_file(name: str, change: Callable[[dict, dict], None]) -> Callable[[], str]:
        """A copy of the retrain's adapter.safetensors whose tensors / header ``change`` edits in place."""
        def make() -> str:
            from safetensors import safe_open
            from safetensors.torch import save_file

            with safe_open(str(retrain() / "adapter.safetensors"), framework="pt") as handle:
                meta = dict(handle.metadata())
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}
            change(tensors, meta)
            path = work / "adapters" / f"{name}.safetensors"
            path.parent.mkdir(exist_ok=True)
            save_file(tensors, str(path), metadata=meta)
            return f"evaluate.adapter={path}"
        return make

    def header_not_json(tensors: dict, meta: dict) -> None:
        meta["glora"] = "{not json"

    nan_name: dict[str, str] = {}

    def nan_tensor(tensors: dict, meta: dict) -> None:
        from glora.run.checkpoint import tensors_digest

        name = nan_name["tensor"] = next(k for k in sorted(tensors) if tensors[k].is_floating_point())
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = math.nan
        meta["sha256"] = tensors_digest(tensors)  # the checksum recomputed: the file is "intact", its values are not

    def nan_check(rc, out) -> list[str]:
        return [] if f"tensor {nan_name['tensor']!r}" in out else [f"does not name tensor {nan_name['tensor']!r}"]

    # ---- round 2, item 1: non-files and hostile YAML -------------------------------------
    def fifo_tree() -> str:
        root = folder("fifo")
        os.mkfifo(root / "train" / "c0" / "x.png")
        return f"data.root={root}"

    def alias_bomb() -> str:
        bomb = work / "bomb"
        shutil.copytree(finished(), bomb)
        levels = ["a: &a [" + ",".join(['"lol"'] * 9) + "]"]
        levels += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
        (bomb / "job.yaml").write_text("\n".join([*levels, "config: {task_name: train}", "choices: *i", ""]))
        return f"resume={bomb}"

    # ---- item 3: data ----------------------------------------------------------------------
    def png16_tree() -> str:
        root = folder("png16")
        ramp = (np.tile(np.arange(16, dtype=np.uint16), (16, 1)) * 4369)  # 0..65535
        for i in range(4):
            Image.fromarray(ramp).save(root / "train" / "c0" / f"{i}.png")  # mode I;16
        return f"data.root={root}"

    def empty_class_tree() -> str:
        root = folder("emptyclass")
        (root / "train" / "c2").mkdir()
        (root / "train" / "c2" / "notes.txt").write_text("no images here")
        return f"data.root={root}"

    def outside_tree() -> str:
        root = vtab("vtab-outside", test=b"images/0-0.png 0\n../outside.png 0\n")
        Image.new("RGB", (16, 16)).save(work / "outside.png")
        return f"data.root={root}"

    # ---- item 5: a task name that climbs out of the run dir ------------------------------
    escape_root = work / "esc" / "a" / "b" / "c"

    def snapshot() -> set[Path]:
        return {p for p in work.rglob("*") if not p.is_relative_to(work / "cache") and not p.is_relative_to(escape_root / "runs")}

    before_escape: dict[str, set[Path]] = {}

    def escape_args() -> str:
        escape_root.mkdir(parents=True, exist_ok=True)
        before_escape["paths"] = snapshot()
        return f"paths.runs={escape_root / 'runs'}"

    def escape_check(rc, out) -> list[str]:
        created = sorted(str(p.relative_to(work)) for p in snapshot() - before_escape["paths"])
        climbed = [str(p) for p in [*work.rglob("*ESCAPE*"), *(a / "ESCAPE" for a in work.parents)] if p.exists()]
        return ([f"created outside the run dir: {created[:3]}"] if created else []) + ([f"ESCAPE made: {climbed}"] if climbed else [])

    # ---- item 6: SIGTERM mid-run ---------------------------------------------------------
    stop_dir = work / "sigterm"

    @functools.cache
    def sigterm() -> tuple[int | None, str]:
        with tempfile.TemporaryFile("w+") as log:
            proc = subprocess.Popen([str(BIN / "glora-train"), *smoke, "trainer.epochs=40", f"hydra.run.dir={stop_dir}"], cwd=work,
                                    stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            deadline = time.monotonic() + TIMEOUT
            while not (stop_dir / "supernet.safetensors").exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            rc = wait(proc, TIMEOUT)
            log.seek(0)
            return rc, log.read()

    def resume_after_sigterm() -> tuple[int | None, str]:
        sigterm()
        return run("glora-train", f"resume={stop_dir}", "trainer.stop_after_epochs=1", cwd=work)

    # ---- item 7: a sweep with a bad point --------------------------------------------------
    @functools.cache
    def sweep() -> tuple[int | None, str]:
        return run("glora-search", "--multirun", *smoke, f"supernet={finished()}", "search.budget=2e3,-5,4e3", "search.generations=1",
                   f"paths.runs={work / 'sweep'}", cwd=work, timeout=3 * TIMEOUT)

    def sweep_dir() -> Path:
        return next((work / "sweep" / "search" / "multirun").iterdir())

    def sweep_check(rc, out) -> list[str]:
        done = sorted(p.name for p in sweep_dir().iterdir() if (p / "layout.json").is_file())
        return [] if done == ["0", "2"] else [f"points with layout.json: {done}, expected ['0', '2']"]

    def sweep_lines(out: str) -> str:
        lines = out.strip().splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
        return " / ".join(line.strip() for line in lines[start:]) if start is not None else ""

    def sweep_report() -> tuple[int | None, str]:
        sweep()
        return run("glora-sweep-report", str(sweep_dir()), cwd=work)

    def sweep_report_check(rc, out) -> list[str]:
        md = sweep_dir() / "sweep.md"
        text = md.read_text() if md.is_file() else ""
        return [] if "## Points without a result" in text and "search.budget=-5" in text else ["sweep.md does not list the failed point"]

    # ---- item 8: a resume that shortens the run ------------------------------------------
    record: dict[str, str] = {}

    def shorten() -> str:
        record["job"] = (finished() / "job.yaml").read_text()
        return f"resume={finished()}"

    def shorten_check(rc, out) -> list[str]:
        return [] if (finished() / "job.yaml").read_text() == record["job"] else ["job.yaml changed"]

    # ---- item 10: a pickle that runs code ------------------------------------------------
    marker = work / "pickle-ran"

    def evil_checkpoint() -> str:
        import torch

        path = work / "evil.pt"
        torch.save({"patch_embed.proj.weight": Payload(f"touch {marker}")}, path)
        return f"model.checkpoint={path}"

    def no_weights_only(rc, out) -> list[str]:
        return ["advises weights_only=False"] if "weights_only=False" in out else []

    def evil_check(rc, out) -> list[str]:
        return (["the pickle ran (marker made)"] if marker.exists() else []) + (["advises weights_only=False"] if "weights_only=False" in out else [])

    # ---- item 7 of round 1: corrupt files (they break train(): run last) -----------------
    def flipped_byte() -> tuple[int | None, str]:
        weights = train() / "supernet.safetensors"
        blob = bytearray(weights.read_bytes())
        blob[-64] ^= 0xFF
        weights.write_bytes(bytes(blob))
        try:
            return run("glora-search", *smoke, f"supernet={train()}", runs, cwd=work)
        finally:
            blob[-64] ^= 0xFF
            weights.write_bytes(bytes(blob))

    def corrupt_state() -> tuple[int | None, str]:
        state = next(train().glob("supernet-state-*.pt"))
        state.write_bytes(b"PK\x03\x04 broken")
        return run("glora-train", f"resume={train()}", "trainer.epochs=4", cwd=work)

    umask = os.umask(0o022)
    os.umask(umask)

    def modes() -> tuple[int | None, str]:
        found = sorted({oct(p.stat().st_mode & 0o777) for p in search().iterdir() if p.is_file() and not p.name.startswith(".")})
        return (0 if found == ["0o644"] else 1), ", ".join(found)

    def field_(key: str) -> tuple[str, ...]:
        return (re.escape(key.split("=")[0]),)

    sup = lambda: f"supernet={train()}"  # noqa: E731
    cases = [
        # ---- round 1 ----
        Case("r1-2 resume", "glora-search resume=<dir> alone", cli("glora-search", lambda: f"resume={search()}"), True),
        Case("r1-2 resume", "training stopped at epoch 1 of 3, resumed with no override", cli("glora-train", lambda: f"resume={train()}"), True),
        Case("r1-2 resume", "resume with an override that changes the run (data.task=digits)",
             cli("glora-train", lambda: f"resume={train()}", "data.task=digits"), expect=("data.task",)),
        Case("r1-2 resume", "resume=A hydra.run.dir=B", cli("glora-train", lambda: f"resume={train()}", f"hydra.run.dir={work / 'B'}"),
             expect=("hydra.run.dir",)),
        Case("r1-5 one dir", "a second job into a dir that holds a run", cli("glora-train", *smoke, lambda: f"hydra.run.dir={train()}"),
             expect=("already holds a run",)),
        *[Case("r1-3 values", o, cli("glora-train", *smoke, runs, o), expect=field_(o)) for o in (
            "trainer.epochs=0", "trainer.epochs=-3", "data.batch_size=0", "optim.lr=-1", "data.eval_batch_size=0",
            "trainer.label_smoothing=1.5", "optim.weight_decay=-1", "data.num_workers=-1", "trainer.max_steps=0")],
        *[Case("r1-3 values", o, cli("glora-search", *smoke, sup, runs, o), expect=field_(o.split(" ")[-1])) for o in (
            "search.population=0", "search.generations=0", "search.top_k=60", "search.mutation_prob=5", "search.crossover=-1",
            "search.mutation=-1", "search.budget=-5", "search.min_params=-1", "search=random search.top_k=3")],
        Case("r1-3 values", "ImageFolder with one class",
             cli("glora-train", *smoke, runs, "data=imagefolder", lambda: f"data.root={folder('oneclass', classes=1)}"), expect=("single class",)),
        Case("r1-4 images", "corrupt PNG in train (num_workers=2)",
             cli("glora-train", *smoke, runs, "data=imagefolder", lambda: f"data.root={folder('badtrain', corrupt='train/c1/2.png')}"),
             expect=(r"train/c1/2\.png",)),
        Case("r1-4 images", "corrupt test image, glora-retrain",
             cli("glora-retrain", *smoke, runs, lambda: f"layout={layout()}", "data=imagefolder",
                 lambda: f"data.root={folder('badtest', corrupt='test/c0/1.png')}"), expect=(r"test/c0/1\.png",)),
        Case("r1-6 environment", "unwritable paths.cache", cli("glora-train", "experiment=smoke", blocked_cache, runs),
             expect=("paths.cache",)),
        Case("r1-6 environment", "trainer.device=cuda without a GPU", cli("glora-train", *smoke, runs, "trainer.device=cuda"),
             expect=("trainer.device",)),
        # ---- round 2 ----
        Case("r2-1 non-files", "a FIFO named x.png in an ImageFolder class folder",
             cli("glora-train", *smoke, runs, "data=imagefolder", fifo_tree), expect=(r"x\.png is a FIFO, not an image file",)),
        Case("r2-1 non-files", "job.yaml alias bomb (billion laughs) on resume", cli("glora-train", alias_bomb),
             expect=("job.yaml holds a YAML anchor or tag", "start a new run")),
        Case("r2-2 file fields", "layout JSON with space.ranks=[1000000000]",
             cli("glora-retrain", *smoke, runs, layout_file("ranks-1e9", space_ranks([1000000000]))), expect=("ranks-1e9.json", "ranks")),
        Case("r2-2 file fields", 'layout JSON with "ranks": "8421"',
             cli("glora-retrain", *smoke, runs, layout_file("ranks-str", space_ranks("8421"))), expect=("ranks-str.json", "ranks")),
        *[Case("r2-2 file fields", f'layout JSON with "trainable_params": {text}',
               cli("glora-retrain", *smoke, runs, layout_file(f"params-{i}", with_value("trainable_params", text))),
               expect=(f"params-{i}.json", "trainable_params")) for i, text in enumerate(("NaN", "1e400", '"x"'))],
        Case("r2-2 file fields", "layout JSON with a layer key twice", cli("glora-retrain", *smoke, runs, layout_file("dup-layer", duplicate_layer)),
             expect=("dup-layer.json", "blocks.0.attn.qkv", "twice")),
        Case("r2-2 file fields", "adapter.safetensors whose glora header is not JSON",
             cli("glora-evaluate", *smoke, runs, adapter_file("not-json", header_not_json)), expect=("not-json.safetensors", "not JSON")),
        Case("r2-3 data", "16-bit PNGs in an ImageFolder (scaled, trains)",
             cli("glora-train", *smoke, runs, "trainer.epochs=1", "data=imagefolder", png16_tree), True),
        Case("r2-3 data", "a class folder with no training images",
             cli("glora-train", *smoke, runs, "data=imagefolder", empty_class_tree), expect=("c2", "no training images")),
        Case("r2-3 data", "VTAB-1k labels {0,1,5}",
             cli("glora-train", *smoke, runs, "data=vtab1k", vtab_arg("vtab-gaps", labels=(0, 1, 5))),
             expect=(r"\.txt", "miss 2, 3, 4")),
        Case("r2-3 data", "VTAB-1k list line ../outside.png 0", cli("glora-train", *smoke, runs, "data=vtab1k", outside_tree),
             expect=(r"test\.txt:2", "outside data.root")),
        Case("r2-3 data", "VTAB-1k label ²",
             cli("glora-train", *smoke, runs, "data=vtab1k", vtab_arg("vtab-sup2", test="images/0-0.png 0\nimages/1-0.png \u00b2\n".encode())),
             expect=(r"test\.txt:2", "ASCII digits")),
        Case("r2-3 data", "VTAB-1k Latin-1 list file (byte 0xE9)",
             cli("glora-train", *smoke, runs, "data=vtab1k", vtab_arg("vtab-latin1", test=b"images/0-0.png 0\n# caf\xe9\n")),
             expect=(r"test\.txt", "UTF-8")),
        *[Case("r2-4 config values", o, cli("glora-search", *smoke, sup, runs, o), expect=field_(o)) for o in ("search.budget=inf", "search.budget=0.5")],
        Case("r2-4 config values", "pipeline.budgets=[inf]", cli("glora-pipeline", *smoke, runs, "pipeline.budgets=[inf]"), expect=("pipeline.budgets",)),
        Case("r2-4 config values", "model.img_size=0", cli("glora-train", *smoke, runs, "model.img_size=0"), expect=("model.img_size",)),
        Case("r2-5 task name", "data.task=../../../ESCAPE (glora-pipeline)",
             cli("glora-pipeline", *smoke, escape_args, "pipeline.tasks=null", "data.task=../../../ESCAPE"), expect=("data.task",), check=escape_check),
        Case("r2-6 SIGTERM", "SIGTERM mid-run (trainer.epochs=40)", sigterm, rc=143,
             expect=(r"stopped by SIGTERM at epoch \d+ step \d+, after writing a checkpoint of that step; resume with: glora-train resume="
                     + re.escape(str(stop_dir)) + "$",)),
        Case("r2-6 SIGTERM", "resume after SIGTERM (trainer.stop_after_epochs=1)", resume_after_sigterm, True),
        Case("r2-7 sweep", "glora-search --multirun search.budget=2e3,-5,4e3", sweep, check=sweep_check, lines=sweep_lines,
             expect=(r"1 sweep point\(s\) failed", r"1: search\.budget=-5")),
        Case("r2-7 sweep", "glora-sweep-report of that sweep", sweep_report, True, check=sweep_report_check),
        Case("r2-8 resume length", "resume=<finished 2-epoch run> trainer.epochs=1", cli("glora-train", shorten, "trainer.epochs=1"),
             expect=("trainer.epochs=1 is below the 2",), check=shorten_check),
        Case("r2-9 adapters", "glora-evaluate evaluate.adapter=<its own backbone>",
             cli("glora-evaluate", *smoke, runs, lambda: f"evaluate.adapter={retrain() / 'adapter.safetensors'}"), True),
        Case("r2-9 adapters", "adapter on another backbone (pretrain.seed=1)",
             cli("glora-evaluate", *smoke, runs, "pretrain.seed=1", lambda: f"evaluate.adapter={retrain() / 'adapter.safetensors'}"),
             expect=("trained on another backbone", "check_backbone=False")),
        Case("r2-9 adapters", "adapter with a NaN (checksum recomputed)", cli("glora-evaluate", *smoke, runs, adapter_file("nan", nan_tensor)),
             expect=("NaN",), check=nan_check),
        Case("r2-10 wording", "malicious pickle as model.checkpoint",
             cli("glora-train", *smoke, runs, "model=timm", "model.name=vit_tiny_patch16_224", evil_checkpoint),
             expect=("model.checkpoint", "evil.pt", "weights-only"), check=evil_check),
        Case("r2-10 wording", "optim.lr_mult.A=inf", cli("glora-train", *smoke, runs, "optim.lr_mult.A=inf"), expect=(r"optim\.lr_mult\.A",)),
        # ---- round 1, item 7 (corrupt files: they change train(), so last) ----
        Case("r1-7 smaller", "a tensor byte flipped inside supernet.safetensors", flipped_byte, expect=("supernet.safetensors", "checksum")),
        Case("r1-7 smaller", "corrupt training state on resume", corrupt_state, expect=("supernet-state-",), check=no_weights_only),
        Case("r1-7 smaller", f"result file modes under umask {oct(umask)}", modes, True, lines=lambda out: out),
    ]
    if args.cases is not None:
        cases = [c for c in cases if any(s in c.name for s in args.cases)]
    rows = []
    for case in cases:
        t0 = time.time()
        rc, out = case.do()
        kind, message = verdict(rc, out, case.expect_ok)
        if case.lines is not None and kind not in ("trace", "hang"):
            message = case.lines(out) or message
            kind = "clear" if kind.endswith(" lines") and message else kind
        wrong = [] if kind == EXPECTED[case.expect_ok] else [f"outcome {kind}"]
        want_rc = case.rc if case.rc is not None else (0 if case.expect_ok else 1)
        if rc is not None and rc != want_rc:
            wrong.append(f"exit {rc}, expected {want_rc}")
        wrong += [f"line lacks /{e}/" for e in case.expect if not re.search(e, message)]
        if case.check is not None and rc is not None:
            try:
                wrong += case.check(rc, out)
            except Exception as err:  # a file the check reads is missing
                wrong.append(f"check failed: {type(err).__name__}: {err}")
        rows.append({"issue item": case.item, "case": case.name, "exit": "-" if rc is None else rc, "outcome": kind,
                     "as described": "yes" if not wrong else "no: " + "; ".join(wrong),
                     "what the user sees": message.replace("|", "/").replace("\n", " ")[:240], "s": round(time.time() - t0)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    counts = {k: int((table["outcome"] == k).sum()) for k in ("clear", "ok", "trace", "silent", "hang")}
    counts.update({k: int(v) for k, v in table["outcome"].value_counts().items() if k not in counts})
    described = int((table["as described"] == "yes").sum())
    text = "\n".join([
        "# Bad input and hostile environments", "", f"Machine: {json.dumps(machine_info())}", "",
        f"`python benchmarks/bad_inputs.py`: {len(table)} cases through the console scripts (smoke configs), {time.time() - started:.0f} s "
        f"(the runs the cases start from included; each case killed after {TIMEOUT} s). Outcomes: {json.dumps(counts)}; "
        f"{described} of {len(table)} as described. `clear` is a refusal: exit != 0 with one error line (the column `as described` "
        "checks it names the field or file and the fix, the exit code, and any files the case must leave alone); `ok` is a case "
        "that must succeed (a resume, a 16-bit PNG, a report); `trace` (a stack trace reached the user), `silent` (a bad input "
        "accepted), `hang` (killed at the timeout) would be defects. `s`: seconds the case took (with the runs it is the first to need).", "",
        markdown_table(table), "",
    ])
    write_text_atomic(Path(args.out) / "bad-inputs-cpu.md", text)
    print(text)


class Payload:
    """Pickled as a call of ``os.system(command)``: what a malicious checkpoint does when unpickled."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


if __name__ == "__main__":
    main()
