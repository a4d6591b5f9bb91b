"""Pre-registered accuracy runs (DESIGN.md §10): a plan file, ``benchmarks/plans/<name>.yaml``,
committed before the run, says which tasks, budgets, methods, grids, seeds and searches a
table holds. ``benchmarks/accuracy.py --plan <file>`` runs exactly that; the work dir keeps
a copy of the plan as it was when the run started, and the report is refused when the plan
file has changed since or when the rows differ from the plan's cells.

Every field is required but ``tune_seeds`` (a plan states its protocol rather than inheriting defaults):

    name: embedded-headline          # = the file's stem; the work dir and results are named after it
    tasks: [count, orientation, texture]
    budgets: [4096, 16384]           # trainable params (head apart) a searched layout may have
    seeds: 5                         # retraining seeds 0..seeds-1 (a headline run needs >= 5)
    searches: 2                      # independent searches per task x budget (a headline run needs >= 2):
                                     #   search k trains its own supernet (trainer.seed=k) and searches with search.seed=k
    epochs: 10                       # every method's training (trainer.epochs)
    supernet_epochs: 100
    methods: [searched, lora_r1, ...]  # names or shell globs; aliases: searched, glora_random
    lrs: {adapters: [1e-3, 3e-3, 1e-2, 3e-2], full_ft: [1e-5, 3e-5, 1e-4, 3e-4]}  # chosen on val, per family
    full_ft_warmup_epochs: 2         # full fine-tuning's own warm-up (adapters keep optim.warmup_epochs)
    tune_seeds: 2                    # optional (default 1): each grid point is trained with seeds 0..k-1 on train
                                     #   and the best mean val accuracy chooses (one seed's lucky or diverged run does not)
    probe_C: [0.01, 0.1, 1, 10, 100] # probe_logreg's inverse regularisation, chosen on val
    overrides: [data.rank_images=0]  # Hydra overrides of the pipeline config, e.g. experiment=real_cpu
    labels: 1000                     # labelled images the search and every method see: train 800 + val 200
                                     #   (+ data.rank_images: labels must be 1000 + data.rank_images)
    test: once                       # the rule: test is scored once per plan (never used to choose)

A plan that does not parse or names an unknown task or method stops with one line naming
the field and the fix (``PlanError``: exit code 2).
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["ALIASES", "LORA_RANKS", "Plan", "PlanError", "blob_hash", "check_config", "check_rows", "check_unchanged", "committed",
           "load_plan", "method_grid", "method_names", "record", "resolve_methods"]

LORA_RANKS = (1, 2, 4, 8)
# Plan shorthands: every independent search of every budget, the random layout of every budget.
ALIASES = {"searched": "glora_search_*_s*", "glora_random": "glora_random_*"}
HEADLINE_SEEDS, HEADLINE_SEARCHES = 5, 2
VTAB_LABELS = 1000  # train 800 + val 200
RECORD = "plan.yaml"  # the plan as it was when the run started, in the work dir
RECORD_INFO = "plan.json"  # where it came from: path, git blob hash, commit, start time
_SET_BY_PLAN = {"trainer.epochs": "epochs", "trainer.seed": "searches", "search.seed": "searches", "search.budget": "budgets",
                "optim.lr": "lrs", "data.task": "tasks", "pipeline.supernet_epochs": "supernet_epochs"}


class PlanError(SystemExit):
    """A plan that cannot run, or a run that differs from its plan: exit code 2 with one line
    (``str(error)``) naming the field and the fix; ``accuracy.py``'s ``main`` prints it."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class LrGrids:
    adapters: list[float] = MISSING  # every adapter (LoRA, GLoRA layouts, PEFT GLoRA, the searched ones) and the head-only probe
    full_ft: list[float] = MISSING  # full fine-tuning


@dataclass
class Plan:
    name: str = MISSING
    tasks: list[str] = MISSING
    budgets: list[int] = MISSING
    seeds: int = MISSING
    searches: int = MISSING
    epochs: int = MISSING
    supernet_epochs: int = MISSING
    methods: list[str] = MISSING
    lrs: LrGrids = field(default_factory=LrGrids)
    full_ft_warmup_epochs: float = MISSING
    tune_seeds: int = 1  # the seeds each grid point is tuned with; the mean val accuracy chooses
    probe_C: list[float] = MISSING
    overrides: list[str] = MISSING
    labels: int = MISSING
    test: str = MISSING

    @property
    def headline(self) -> bool:
        return self.seeds >= HEADLINE_SEEDS and self.searches >= HEADLINE_SEARCHES


def method_names(budgets, searches: int | None, peft_glora_ranks=LORA_RANKS, glora_lora_ranks=LORA_RANKS) -> list[str]:
    """Every method a run can hold: ``searches`` independent searches per budget
    (``glora_search_<b>_s<k>``), or with ``searches=None`` the flag interface's single one
    (``glora_search_<b>``)."""
    searched = [f"glora_search_{b}" for b in budgets] if searches is None else [f"glora_search_{b}_s{k}" for b in budgets for k in range(searches)]
    return [*searched, *(f"lora_r{r}" for r in LORA_RANKS), *(f"lora_r{r}_alpha_r" for r in LORA_RANKS),
            *(f"glora_random_{b}" for b in budgets), *(f"glora_lora_r{r}" for r in glora_lora_ranks),
            *(f"peft_glora_r{r}" for r in peft_glora_ranks), "full_ft", "probe_logreg", "probe"]


def resolve_methods(entries: list[str], known: list[str], where: str = "methods") -> list[str]:
    """The known names each entry (a name, a glob or an alias) matches, in ``known``'s order;
    an entry matching none is a ``PlanError`` naming it."""
    picked = set()
    for i, entry in enumerate(entries):
        pattern = ALIASES.get(entry, entry)
        hits = [n for n in known if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise PlanError(f"{where}[{i}]={entry!r} matches no method; known: {', '.join(known)} (aliases: {', '.join(ALIASES)})")
        picked.update(hits)
    return [n for n in known if n in picked]


def method_grid(plan: Plan, name: str) -> list[float]:
    """The grid ``name`` is tuned on: full fine-tuning's lrs, the logistic probe's Cs, or the adapters' lrs."""
    return list(plan.probe_C if name == "probe_logreg" else plan.lrs.full_ft if name == "full_ft" else plan.lrs.adapters)


def load_plan(path: str | Path) -> Plan:
    """Parse and check a plan file (everything that needs no config; ``check_config`` does the rest)."""
    path = Path(path)
    where = f"plan {path}"
    if not path.is_file():
        raise PlanError(f"{where}: no such file; write it first (see benchmarks/plans/embedded-headline.yaml)")
    try:
        raw = OmegaConf.load(path)
        plan = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Plan), raw))
    except yaml.YAMLError as e:
        raise PlanError(f"{where}: not valid YAML ({' '.join(str(e).split())}); fix the syntax") from None
    except OmegaConfBaseException as e:
        raise PlanError(f"{where}: {_omegaconf_problem(e)}") from None
    _check(plan, where, path)
    return plan


def _omegaconf_problem(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None) or "?"
    kind = type(e).__name__
    if kind == "ConfigKeyError":
        return f"{key}: unknown field; the fields are {', '.join(Plan.__dataclass_fields__)} (lrs: adapters, full_ft)"
    if kind == "MissingMandatoryValue":
        return f"{key}: missing; every field is required (a plan states its protocol)"
    msg = str(getattr(e, "msg", e)).strip().splitlines()[0]
    return f"{key}: {msg}; fix its type"


def _check(plan: Plan, where: str, path: Path) -> None:
    from glora.data import REAL_TASKS, TARGET_TASKS

    def need(ok: bool, fieldname: str, fix: str) -> None:
        if not ok:
            raise PlanError(f"{where}: {fieldname}: {fix}")

    known_tasks = [*TARGET_TASKS, *REAL_TASKS]
    need(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", plan.name)), "name", f"{plan.name!r} must be a file-name-safe word, e.g. {path.stem!r}")
    need(plan.name == path.stem, "name", f"{plan.name!r} must be the file's stem {path.stem!r} (the plan, its work dir and its results share it)")
    need(len(plan.tasks) >= 1, "tasks", f"name at least one task of {', '.join(known_tasks)}")
    for i, task in enumerate(plan.tasks):
        need(task in known_tasks, f"tasks[{i}]={task!r}", f"unknown task; known: {', '.join(known_tasks)}")
    need(len(set(plan.tasks)) == len(plan.tasks), "tasks", "a task is listed twice; list each once")
    need(len(plan.budgets) >= 1 and all(b > 0 for b in plan.budgets), "budgets", "give at least one positive budget, e.g. [4096, 16384]")
    need(len(set(plan.budgets)) == len(plan.budgets), "budgets", "a budget is listed twice; list each once")
    for name in ("seeds", "searches", "epochs", "supernet_epochs", "tune_seeds"):
        need(getattr(plan, name) >= 1, f"{name}={getattr(plan, name)}", "use at least 1")
    need(len(plan.methods) >= 1, "methods", "name at least one method, e.g. [searched, lora_r1]")
    resolve_methods(plan.methods, method_names(plan.budgets, plan.searches), f"{where}: methods")
    for name, grid in (("lrs.adapters", plan.lrs.adapters), ("lrs.full_ft", plan.lrs.full_ft), ("probe_C", plan.probe_C)):
        need(len(grid) >= 1 and all(v > 0 for v in grid) and len(set(grid)) == len(grid), f"{name}={list(grid)}",
             "use distinct values > 0, e.g. [1e-3, 3e-3, 1e-2] (a chosen value must lie inside its grid)")
    need(plan.full_ft_warmup_epochs >= 0, f"full_ft_warmup_epochs={plan.full_ft_warmup_epochs}", "use 0 (no warm-up) or more epochs")
    for i, override in enumerate(plan.overrides):
        key = override.split("=", 1)[0].lstrip("+~")
        need("=" in override, f"overrides[{i}]={override!r}", "write a Hydra override key=value, e.g. experiment=real_cpu")
        need(key not in _SET_BY_PLAN, f"overrides[{i}]={override!r}", f"the plan's field {_SET_BY_PLAN.get(key)} sets {key}; drop the override")
    need(plan.labels >= VTAB_LABELS, f"labels={plan.labels}",
         f"a VTAB-1k task has {VTAB_LABELS} labels (train 800 + val 200); use {VTAB_LABELS} (+ data.rank_images when set)")
    need(plan.test == "once", f"test={plan.test!r}", "write test: once (test is scored once per plan, never used to choose)")


def check_config(plan: Plan, cfg, where: str) -> list[str]:
    """The plan against its composed config: labels against ``data.rank_images``, and GLoRA's
    LoRA layouts against the space's ranks. Returns the plan's methods, resolved."""
    extra = cfg.data.rank_images
    if plan.labels != VTAB_LABELS + extra:
        raise PlanError(f"{where}: labels={plan.labels} but the config's data.rank_images={extra} gives the search "
                        f"{VTAB_LABELS + extra} labelled images; set labels: {VTAB_LABELS + extra} or data.rank_images={plan.labels - VTAB_LABELS}")
    from glora.stages.setup import space_for  # the space the run builds: the backbone family fills unset targets

    space = space_for(cfg.space, cfg.model.name)
    known = method_names(plan.budgets, plan.searches, glora_lora_ranks=[r for r in LORA_RANKS if r in space.ranks])
    return resolve_methods(plan.methods, known, f"{where}: methods (space ranks {list(space.ranks)})")


# ---- the record of a run: the plan as it started, and the rows against its cells ----------------
def blob_hash(path: Path) -> str:
    """``git hash-object <path>``: the id git gives the file's bytes (computed here, no repository needed)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _git(folder: Path, *args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None


def committed(path: Path) -> str | None:
    """The commit (HEAD) that holds exactly these bytes at ``path``, or None: not committed,
    changed since, or not in a repository."""
    path = Path(path).resolve()
    top = _git(path.parent, "rev-parse", "--show-toplevel")
    if top is None or not path.is_relative_to(top):
        return None
    blob = _git(path.parent, "rev-parse", f"HEAD:{path.relative_to(top).as_posix()}")
    return _git(path.parent, "rev-parse", "HEAD") if blob == blob_hash(path) else None


def record(plan_path: Path, work: Path) -> dict:
    """At a run's start: keep a copy of the plan in ``work`` (the first run), or check the
    plan still is that copy (every later one). Returns the record (path, blob hash, commit)."""
    copy, info = work / RECORD, work / RECORD_INFO
    if copy.is_file():
        check_unchanged(plan_path, work)
        return json.loads(info.read_text())
    work.mkdir(parents=True, exist_ok=True)
    code = Path(__file__).resolve().parent
    dirty = _git(code, "status", "--porcelain", "--untracked-files=no")
    meta = {"file": str(plan_path), "blob": blob_hash(plan_path), "commit": committed(plan_path),
            "code": _git(code, "rev-parse", "HEAD"), "code_changed": bool(dirty) if dirty is not None else None,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    _write_atomic(info, json.dumps(meta, indent=1).encode())
    _write_atomic(copy, Path(plan_path).read_bytes())  # one process per task may start at once: none reads half a copy
    return meta


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def check_unchanged(plan_path: Path, work: Path) -> None:
    """Refuse (``PlanError``) when the plan file differs from the copy its run started with,
    naming the first differing field."""
    copy = work / RECORD
    where = f"plan {plan_path}"
    if not copy.is_file():
        raise PlanError(f"{where}: {work} holds no recorded plan ({RECORD}); run the plan first (the same command without --report)")
    if copy.read_bytes() == Path(plan_path).read_bytes():
        return
    now, then = (_flat(OmegaConf.to_container(OmegaConf.load(p))) for p in (plan_path, copy))
    diff = next((k for k in [*now, *then] if now.get(k, "<absent>") != then.get(k, "<absent>")), None)
    fix = "restore it (git checkout the file), or save the new protocol as a new plan with its own name and run that"
    if diff is None:
        raise PlanError(f"{where}: its text changed since the run started ({copy}), though no field did; {fix}")
    raise PlanError(f"{where}: field {diff} changed since the run started: {then.get(diff, '<absent>')!r} then, "
                    f"{now.get(diff, '<absent>')!r} now ({copy}); {fix}")


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def check_rows(plan: Plan, methods: list[str], runs: pd.DataFrame, where: str) -> None:
    """Refuse (``PlanError``) unless ``runs`` holds exactly one row per planned cell
    (method, task, seed; a searched method names its search), of this plan, at a chosen
    value inside its grid."""
    planned = {(m, t, s) for m in methods for t in plan.tasks for s in range(plan.seeds)}
    present = list(zip(runs["method"], runs["task"], runs["seed"].astype(int))) if len(runs) else []
    fix = "finish the run (the same command without --report)"
    for cell in sorted(planned - set(present), key=lambda c: (plan.tasks.index(c[1]), methods.index(c[0]), c[2])):
        raise PlanError(f"{where}: cell {_cell_name(cell)} has no row; {fix}")
    for cell in present:
        if cell not in planned:
            raise PlanError(f"{where}: row {_cell_name(cell)} is not in the plan; a plan's table holds its cells only "
                            "(remove the row, or write a plan that names it)")
    dupes = pd.Series(present).value_counts()
    if (dupes > 1).any():
        raise PlanError(f"{where}: cell {_cell_name(dupes[dupes > 1].index[0])} has {dupes.max()} rows; keep one")
    others = runs[runs["plan"] != plan.name] if "plan" in runs else runs
    if len(others):
        bad = others.iloc[0]
        raise PlanError(f"{where}: row {_cell_name((bad['method'], bad['task'], int(bad['seed'])))} was run under plan "
                        f"{bad.get('plan')!r}, not {plan.name!r}; rerun it under this plan")
    for row in runs.itertuples():
        grid = method_grid(plan, row.method)
        if not any(abs(row.lr - v) <= 1e-9 * v for v in grid):
            raise PlanError(f"{where}: row {_cell_name((row.method, row.task, int(row.seed)))} chose {row.lr:g}, outside its grid "
                            f"{grid}; rerun it under this plan")


def _cell_name(cell: tuple) -> str:
    method, task, seed = cell
    search = re.search(r"_s(\d+)$", method) if method.startswith("glora_search_") else None
    return f"(method={method}, task={task}, seed={seed}{f', search={search.group(1)}' if search else ''})"
