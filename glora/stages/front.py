"""A multi-objective search's front as files, and read back: ``front.csv`` (one row per
front point, by params), ``front/<params>.json`` (each point's glora-layout/1, so any
point retrains like a search's ``layout.json``) and ``front.png`` (every evaluated layout
with the front drawn through it). The pipeline retrains the front's points per budget and
the sweep report draws a front beside a per-budget sweep, both from these files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from glora.run.errors import JobError
from glora.run.io import atomic_write
from glora.search import LayoutOps, Record
from glora.search.pareto import hypervolume, staircase
from glora.search.plots import plot_front

__all__ = ["FRONT_COLUMNS", "FRONT_CSV", "FRONT_DIR", "best_under", "front_layout", "front_records", "read_front", "write_front"]

FRONT_CSV = "front.csv"
FRONT_DIR = "front"
FRONT_COLUMNS = ["trainable_params", "val_acc", "layout_hash", "generation"]


def front_records(records: list[Record]) -> list[Record]:
    """The non-dominated records, one per params count (of equal points the first
    evaluated), by params: accuracy rises strictly along it."""
    return [records[i] for i in staircase([(float(r.params), float(r.val_acc)) for r in records])]


def write_front(run_dir: Path, records: list[Record], ops: LayoutOps, budget: int, min_params: int, history: pd.DataFrame) -> dict:
    """Write front.csv, front/<params>.json and front.png into ``run_dir``; returns the
    metrics (front size, hypervolume with the budget as the params reference)."""
    points = front_records(records)
    table = pd.DataFrame([{"trainable_params": r.params, "val_acc": r.val_acc, "layout_hash": r.hash, "generation": r.generation}
                          for r in points], columns=FRONT_COLUMNS)
    folder = run_dir / FRONT_DIR
    folder.mkdir(exist_ok=True)
    names = {f"{r.params}.json" for r in points}
    for stale in folder.glob("*.json"):  # a front of an earlier run of this dir
        if stale.name not in names:
            stale.unlink()
    for record in points:
        ops.layout(record.layers, metrics={"val_acc": record.val_acc}).save(folder / f"{record.params}.json")
    atomic_write(run_dir / FRONT_CSV, lambda tmp: table.to_csv(tmp, index=False))
    plot_front(history, table, run_dir / "front.png", budget, min_params)
    return {"front_size": len(points), "hypervolume": hypervolume(records, ref_params=budget)}


def read_front(run_dir: str | Path) -> pd.DataFrame:
    """A front search's front.csv (by params), or one clear error."""
    path = Path(run_dir) / FRONT_CSV
    if not path.is_file():
        raise JobError(f"{run_dir} holds no {FRONT_CSV}; point at a finished front search (glora-search search=pareto)")
    table = pd.read_csv(path)
    if list(table.columns) != FRONT_COLUMNS or table.empty:
        raise JobError(f"{path} is not a front table (columns {FRONT_COLUMNS}, at least one row); re-run the front search")
    return table.sort_values("trainable_params", kind="stable").reset_index(drop=True)


def best_under(table: pd.DataFrame, budget: float, where: str) -> pd.Series:
    """The point of ``table`` with the best accuracy at most ``budget`` params (ties: fewer
    params; on a front, the one with the most params that fit); ``where`` names the
    setting for the error."""
    fits = table[table["trainable_params"] <= budget]
    if fits.empty:
        raise JobError(f"{where}={budget:g}: no front point has that few params (the smallest has "
                       f"{int(table['trainable_params'].min())}); raise the budget or search lower with search.min_params")
    return fits.sort_values(["val_acc", "trainable_params"], ascending=[False, True], kind="stable").iloc[0]


def front_layout(run_dir: str | Path, point: pd.Series) -> Path:
    """The layout JSON of a front point."""
    return Path(run_dir) / FRONT_DIR / f"{int(point['trainable_params'])}.json"
