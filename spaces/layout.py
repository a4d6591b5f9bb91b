"""Layout: one concrete A–E choice for every targeted layer, and its ``glora-layout/1`` JSON."""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from glora.run.checkpoint import DuplicateKeyError, unique_keys
from glora.run.io import write_json_atomic

from .options import TENSORS, Option, OptionError, option_cost, parse_option
from .space import LayerShape, Space, SpaceError, model_name

__all__ = ["Layout", "LayoutError", "FORMAT", "Choice", "TunedLr"]

FORMAT = "glora-layout/1"

#: One layer's choice: an Option for each of A, B, C, D, E (in that order).
Choice = tuple[Option, Option, Option, Option, Option]


class LayoutError(ValueError):
    """A layout that does not fit the model or space it is used with."""


def _positive_lr(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@dataclass(frozen=True)
class TunedLr:
    """The lr a search's re-ranking chose on val from ``grid``: the search hands it to the
    retraining with the layout (a retrain trains at it when the grid held a choice)."""

    lr: float
    grid: tuple[float, ...]
    val_acc: float | None = None  # the winner's stand-alone val accuracy at ``lr``

    @property
    def chosen(self) -> bool:
        """A grid of one lr chose nothing: the retraining keeps its own optim.lr."""
        return len(self.grid) >= 2

    def to_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "grid": list(self.grid), "val_acc": self.val_acc}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> "TunedLr":
        """Parse a layout's ``tuned_lr`` block; a bad field is one LayoutError naming it."""
        where = f"{source}: field 'tuned_lr'"
        if not isinstance(data, Mapping):
            raise LayoutError(f"{where} must be an object {{lr, grid, val_acc}}; fix it or drop it to retrain at optim.lr")
        grid, lr, acc = data.get("grid"), data.get("lr"), data.get("val_acc")
        if not isinstance(grid, list) or not grid or not all(_positive_lr(x) for x in grid):
            raise LayoutError(f"{where}.grid={grid!r} is not a non-empty list of lrs > 0; fix it or drop tuned_lr to retrain at optim.lr")
        if not _positive_lr(lr) or lr not in grid:
            raise LayoutError(f"{where}.lr={lr!r} is not one of its grid {grid}; fix it or drop tuned_lr to retrain at optim.lr")
        if acc is not None and (isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0 <= acc <= 1):
            raise LayoutError(f"{where}.val_acc={acc!r} is not an accuracy in [0, 1] (or null); fix it or drop it")
        return cls(float(lr), tuple(float(x) for x in grid), None if acc is None else float(acc))

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], source: str) -> "TunedLr | None":
        """Layouts written before ``tuned_lr`` kept the choice in metrics
        (``standalone_lr`` among ``standalone_lrs``): read them the same way."""
        if "standalone_lr" not in metrics and "standalone_lrs" not in metrics:
            return None
        block = {"lr": metrics.get("standalone_lr"), "grid": metrics.get("standalone_lrs"), "val_acc": metrics.get("standalone_val_acc")}
        return cls.from_dict(block, f"{source} (metrics.standalone_lr / standalone_lrs)")


def _count(data: Mapping[str, Any], key: str, source: str) -> int | None:
    """An optional count of params in a layout file: a whole, finite number ≥ 0 (``2e4``
    reads as a float), or absent / null."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value) or value < 0:
        raise LayoutError(f"{source}: field {key!r}={value!r} is not a whole number ≥ 0 (or null); fix it or drop it")
    return int(value)


def _describe(options: tuple[Option, ...]) -> str:
    return ", ".join(str(o) for o in options)


@dataclass
class Layout:
    """Per-layer A–E choices for one model under one space.

    ``shapes`` (out, in, bias per layer) is known once the layout has been sampled
    from, or checked against, a model; a layout loaded from JSON alone carries the
    file's ``trainable_params`` until then.
    """

    layers: dict[str, Choice]
    model: str
    space: Space
    shapes: dict[str, LayerShape] | None = None
    budget: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    stored_params: int | None = None
    tuned_lr: TunedLr | None = None  # the search's lr choice, handed to the retraining

    # ---- building -------------------------------------------------------------------
    @classmethod
    def sample(
        cls, model: nn.Module, space: Space, seed: int | None = None, rng: random.Random | None = None
    ) -> "Layout":
        """A layout drawn uniformly, per layer and per tensor, from the space's options."""
        rng = rng if rng is not None else random.Random(seed)
        shapes = space.target_layers(model)
        layers = {
            name: tuple(rng.choice(space.options_for(t, shape)) for t in TENSORS)
            for name, shape in shapes.items()
        }
        return cls(layers, model_name(model), space, shapes)  # type: ignore[arg-type]

    @classmethod
    def uniform(cls, model: nn.Module, space: Space, **choice: str) -> "Layout":
        """The same choice on every layer (``A="LoRA_8", D="vector"``, unset = none);
        C, D and E fall back to ``none`` on layers without a bias."""
        unknown = set(choice) - set(TENSORS)
        if unknown:
            raise LayoutError(f"Layout.uniform: unknown support tensors {sorted(unknown)}; use A–E")
        wanted = {t: parse_option(choice.get(t, "none")) for t in TENSORS}
        shapes = space.target_layers(model)
        layers = {}
        for name, shape in shapes.items():
            row = []
            for t in TENSORS:
                legal = space.options_for(t, shape)
                option = wanted[t] if wanted[t] in legal else Option("none")
                if option != wanted[t] and shape.bias:
                    raise LayoutError(f"Layout.uniform: {t}={wanted[t]} is not in the space ({_describe(legal)})")
                row.append(option)
            layers[name] = tuple(row)
        return cls(layers, model_name(model), space, shapes)  # type: ignore[arg-type]

    # ---- counting and identity ------------------------------------------------------
    def layer_params(self, name: str) -> int:
        if self.shapes is None:
            raise LayoutError("this layout is not bound to a model yet; check it against one first")
        shape = self.shapes[name]
        return sum(
            option_cost(t, o, shape.out_features, shape.in_features) for t, o in zip(TENSORS, self.layers[name])
        )

    @property
    def trainable_params(self) -> int:
        """Support-tensor elements this layout trains (the task head is counted apart)."""
        if self.shapes is None:
            if self.stored_params is None:
                raise LayoutError("layout has no shapes and no stored trainable_params")
            return self.stored_params
        return sum(self.layer_params(name) for name in self.layers)

    @property
    def hash(self) -> str:
        """Stable 12-hex id of the choices (not of metrics or budget)."""
        canon = json.dumps({n: [str(o) for o in c] for n, c in sorted(self.layers.items())}, separators=(",", ":"))
        return hashlib.sha1(canon.encode()).hexdigest()[:12]

    # ---- checking -------------------------------------------------------------------
    def check(self, shapes: Mapping[str, LayerShape], space: Space, model: str | None = None) -> "Layout":
        """Return this layout bound to a model's targeted ``shapes`` under ``space``,
        or raise one :class:`LayoutError` naming the layer and field at fault."""
        if model is not None and self.model != model:
            raise LayoutError(
                f"layout is for model {self.model!r} but this model is {model!r}; "
                "search or sample a layout for this model"
            )
        try:
            space.check_ranks(shapes)
        except SpaceError as err:
            raise LayoutError(str(err)) from None
        missing = [n for n in shapes if n not in self.layers]
        extra = [n for n in self.layers if n not in shapes]
        if extra:
            raise LayoutError(
                f"layout has layer {extra[0]!r} that this model does not target"
                f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}: layout of another model or space?"
            )
        if missing:
            raise LayoutError(
                f"layout has no entry for layer {missing[0]!r}"
                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; every targeted layer needs A–E"
            )
        for name, choice in self.layers.items():
            for tensor, option in zip(TENSORS, choice):
                legal = space.options_for(tensor, shapes[name])
                if option in legal:
                    continue
                where = f"layer {name!r}, field {tensor!r}"
                if option.kind == "lora" and option.rank > space.max_rank:
                    raise LayoutError(
                        f"{where}: {option} has rank {option.rank} above the space's maximum {space.max_rank}; "
                        f"use one of {_describe(legal)}"
                    )
                reason = " (the layer has no bias)" if not shapes[name].bias and tensor in "CDE" else ""
                raise LayoutError(f"{where}: {option} is not an option here{reason}; use one of {_describe(legal)}")
        bound = replace(self, shapes=dict(shapes), space=space)
        if self.stored_params is not None and bound.trainable_params != self.stored_params:
            raise LayoutError(
                f"layout says trainable_params={self.stored_params} but it counts "
                f"{bound.trainable_params} on this model: layout of another model?"
            )
        return bound

    # ---- JSON -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "model": self.model,
            "space": self.space.to_dict(),
            "budget": self.budget,
            "trainable_params": self.trainable_params,
            "layers": {n: {t: str(o) for t, o in zip(TENSORS, c)} for n, c in self.layers.items()},
            "metrics": dict(self.metrics),
        }
        if self.tuned_lr is not None:
            data["tuned_lr"] = self.tuned_lr.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "layout") -> "Layout":
        """Parse a ``glora-layout/1`` mapping; every problem is one LayoutError naming ``source``."""
        if not isinstance(data, Mapping):
            raise LayoutError(f"{source}: expected a JSON object, got {type(data).__name__}")
        fmt = data.get("format")
        if fmt != FORMAT:
            raise LayoutError(f"{source}: field 'format' is {fmt!r}, expected {FORMAT!r}")
        for key in ("model", "space", "layers"):
            if key not in data:
                raise LayoutError(f"{source}: missing field {key!r}")
        if not isinstance(data["model"], str) or not data["model"]:
            raise LayoutError(f"{source}: field 'model'={data['model']!r} must be a timm model name")
        try:
            space = Space.from_dict(data["space"], source=source)
        except SpaceError as err:
            raise LayoutError(f"{source}: field 'space': {err}") from None
        if not isinstance(data["layers"], Mapping) or not data["layers"]:
            raise LayoutError(f"{source}: field 'layers' must be a non-empty object of layer -> A–E")
        layers: dict[str, Choice] = {}
        for name, row in data["layers"].items():
            if not isinstance(row, Mapping):
                raise LayoutError(f"{source}: layer {name!r}: expected an object with A–E")
            extra = set(row) - set(TENSORS)
            if extra:
                raise LayoutError(f"{source}: layer {name!r}: unknown field(s) {sorted(extra)}; fields are A–E")
            options = []
            for tensor in TENSORS:
                if tensor not in row:
                    raise LayoutError(f"{source}: layer {name!r}: missing field {tensor!r}")
                try:
                    options.append(parse_option(row[tensor]))
                except OptionError as err:
                    raise LayoutError(f"{source}: layer {name!r}, field {tensor!r}: {err}") from None
            layers[name] = tuple(options)  # type: ignore[assignment]
        params = _count(data, "trainable_params", source)
        budget = _count(data, "budget", source)
        metrics = data.get("metrics") or {}
        if not isinstance(metrics, Mapping):
            raise LayoutError(f"{source}: field 'metrics' must be an object (or null), got {type(metrics).__name__}")
        tuned = TunedLr.from_dict(data["tuned_lr"], source) if data.get("tuned_lr") is not None else TunedLr.from_metrics(metrics, source)
        return cls(
            layers,
            data["model"],
            space,
            budget=budget,
            metrics=dict(metrics),
            stored_params=params,
            tuned_lr=tuned,
        )

    def save(self, path: str | os.PathLike) -> Path:
        write_json_atomic(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Layout":
        """Read a layout JSON file (plain JSON: nothing in it is ever executed; a key given
        twice in one object is refused, not silently overwritten)."""
        path = Path(path)
        if not path.is_file():
            raise LayoutError(f"layout file {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_keys)
        except DuplicateKeyError as err:
            raise LayoutError(f"{path}: {err}; keep one entry per key") from None
        except (UnicodeDecodeError, ValueError) as err:
            raise LayoutError(f"{path}: not a JSON layout file ({err})") from None
        return cls.from_dict(data, source=str(path))
