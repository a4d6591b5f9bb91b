"""Evaluation without training (``glora-evaluate``): a finished model scored on one or more
test sets. The model is a ``glora-retrain`` run dir (or each retraining of a
``glora-pipeline`` run dir), an exported ``model.safetensors`` with its ``model.json``
(plain timm), or a backbone (the ``model`` config) with an ``adapter.safetensors``. Each
target is a data config: a built-in task, a folder, a k-shot or shifted variant. Per model
and target: accuracy, per-class accuracy, NLL and expected calibration error, and a
confusion-matrix plot."""
from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import Subset  # noqa: E402
from tqdm import tqdm  # noqa: E402

from glora.backbones import EMBEDDED, ModelConfig, create_model, load_backbone  # noqa: E402
from glora.backbones.embedded import PretrainConfig, ensure_embedded_backbone  # noqa: E402
from glora.data import DataConfig, Preprocess, build_task  # noqa: E402
from glora.run.checkpoint import load_weights, read_identity  # noqa: E402
from glora.run.device import pick_device  # noqa: E402
from glora.run.errors import CheckpointError, ConfigError, JobError, require  # noqa: E402
from glora.run.io import atomic_write, write_json_atomic, write_text_atomic  # noqa: E402
from glora.run.plots import save_figure  # noqa: E402
from glora.search.report import markdown_table  # noqa: E402
from glora.supernet import load_adapter  # noqa: E402
from glora.supernet.adapter import ADAPTER_FORMAT  # noqa: E402
from glora.training import predict  # noqa: E402

from .config import JobConfig  # noqa: E402

__all__ = ["EvaluateConfig", "EvaluateJobConfig", "ScoredModel", "calibration_error", "run_evaluate", "score", "target_configs"]

log = logging.getLogger(__name__)


@dataclass
class EvaluateConfig:
    run: Optional[str] = None  # a glora-retrain / glora-pipeline run dir, or an exported model.safetensors (model.json beside it)
    adapter: Optional[str] = None  # an adapter.safetensors, put on the backbone of the `model` config
    # Test sets: "task" or "task@shift" (a built-in task, e.g. mnist@blur:3), or a mapping of data
    # fields over `data` (e.g. {source: imagefolder, root: /data/x}); empty: `data` itself.
    targets: list[Any] = field(default_factory=list)
    ece_bins: int = 15  # equal-width confidence bins of the expected calibration error
    max_images: Optional[int] = None  # score each target on this many of its test images (a seeded subset, the same for every model); null: all

    def __post_init__(self) -> None:
        require(self.run is None or self.adapter is None, "evaluate.adapter", self.adapter,
                f"evaluate.run={self.run!r} is set too: score one model, either a run dir / model.safetensors or an adapter")
        require(self.ece_bins >= 1, "evaluate.ece_bins", self.ece_bins, "use at least 1 bin, e.g. 15")
        require(self.max_images is None or self.max_images >= 1, "evaluate.max_images", self.max_images,
                "use null (every test image) or a positive number of images, e.g. 1000")


@dataclass
class EvaluateJobConfig(JobConfig):
    task_name: str = "evaluate"
    model: ModelConfig = field(default_factory=ModelConfig)  # the backbone under evaluate.adapter (unused otherwise)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    data: DataConfig = field(default_factory=DataConfig)  # what every target starts from
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


@dataclass
class ScoredModel:
    label: str  # its name in tables and file names
    model: nn.Module
    preprocess: Preprocess
    num_classes: int


def target_configs(cfg: EvaluateJobConfig) -> list[DataConfig]:
    """``evaluate.targets`` as data configs over ``data`` (``data`` alone when empty); a
    bad entry is one ConfigError naming it."""
    out = []
    for i, target in enumerate(cfg.evaluate.targets or [None]):
        where = f"evaluate.targets[{i}]"
        if target is None:
            out.append(cfg.data)
            continue
        if isinstance(target, str):
            task, _, shift = target.partition("@")
            changes: dict[str, Any] = {"source": "embedded", "task": task, "root": None, "shift": shift or None}
        elif isinstance(target, dict):
            changes = dict(target)
        else:
            raise ConfigError(f"{where}={target!r} cannot work: write a task ('mnist', 'mnist@blur:3') or a mapping of data fields")
        known = {f.name for f in dataclasses.fields(DataConfig)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]} cannot work: not a data field; the fields are {', '.join(sorted(known))}")
        try:
            out.append(dataclasses.replace(cfg.data, **changes))
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    return out


def _identity(path: Path) -> dict:
    """The ``glora`` header of a safetensors file this project wrote (one CheckpointError otherwise)."""
    return read_identity(path, what="model or adapter file")


def _exported(weights: Path, label: str) -> ScoredModel:
    spec_file = weights.with_name("model.json")
    if not spec_file.is_file():
        raise JobError(f"{weights} has no model.json beside it (glora-retrain writes both); point evaluate.run at its run dir")
    try:
        spec = json.loads(spec_file.read_text())
        name, kwargs, classes, pre = spec["name"], dict(spec["kwargs"]), int(spec["num_classes"]), spec["preprocess"]
        preprocess = Preprocess(int(pre["img_size"]), tuple(pre["mean"]), tuple(pre["std"]))
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{spec_file} is not a model.json of glora-retrain ({err!r}); re-export the model") from None
    if _identity(weights).get("format") == ADAPTER_FORMAT:
        raise JobError(f"{weights} is a GLoRA adapter, not a model: score it with evaluate.adapter={weights} (on its backbone)")
    model = create_model(name, classes, **kwargs)
    load_weights(weights, model, {})
    return ScoredModel(label, model.eval(), preprocess, classes)


def scored_models(cfg: EvaluateJobConfig) -> list[ScoredModel]:
    """What ``evaluate.run`` / ``evaluate.adapter`` point at, built and loaded."""
    e = cfg.evaluate
    if e.adapter is not None:
        path = Path(e.adapter).expanduser()
        if not path.is_file():
            raise JobError(f"evaluate.adapter={e.adapter!r} does not exist; glora-retrain writes adapter.safetensors in its run dir")
        classes = _identity(path).get("num_classes")
        if not isinstance(classes, int) or classes < 2:
            raise CheckpointError(f"adapter {str(path)!r} records no num_classes; re-export it with glora-retrain")
        embedded = ensure_embedded_backbone(cfg.pretrain, cfg.paths.cache) if cfg.model.name == EMBEDDED else None
        model, spec = load_backbone(cfg.model, num_classes=classes, embedded_dir=embedded, cache_root=cfg.paths.cache)
        load_adapter(model, path, {"kwargs": spec.kwargs, "num_classes": classes})
        return [ScoredModel(path.parent.name or path.stem, model.eval(), spec.preprocess, classes)]
    path = Path(e.run).expanduser()
    if path.is_file():
        return [_exported(path, path.parent.name)]
    if not path.is_dir():
        raise JobError(f"evaluate.run={e.run!r} is neither a run dir nor a model.safetensors; point it at runs/retrain/<time>")
    if (path / "model.safetensors").is_file():
        return [_exported(path / "model.safetensors", path.name)]
    found = sorted(path.glob("retrain-*/model.safetensors"))  # a pipeline's retrainings
    if not found:
        raise JobError(f"evaluate.run={e.run!r} holds no model.safetensors (nor retrain-*/model.safetensors of a pipeline); "
                       "point it at a finished glora-retrain or glora-pipeline run dir")
    return [_exported(weights, weights.parent.name) for weights in found]


def calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int) -> float:
    """Expected calibration error: over equal-width bins of the top probability, the
    bin-weighted gap between accuracy and mean confidence."""
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi) if lo > 0 else (confidence >= lo) & (confidence <= hi)
        if inside.any():
            ece += inside.float().mean() * (correct[inside].mean() - confidence[inside].mean()).abs()
    return float(ece)


def score(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, bins: int) -> dict[str, Any]:
    """Accuracy, per-class accuracy (null for a class without images), NLL, ECE and the
    confusion matrix (rows: true class, columns: predicted) of ``logits``."""
    predicted = logits.argmax(-1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    per_class = [None if confusion[c].sum() == 0 else float(confusion[c, c] / confusion[c].sum()) for c in range(num_classes)]
    return {"images": len(labels), "acc": float((predicted == labels).float().mean()), "nll": float(F.cross_entropy(logits, labels)),
            "ece": calibration_error(logits.softmax(-1), labels, bins), "per_class_acc": per_class, "confusion": confusion.tolist()}


def plot_confusion(confusion: list[list[int]], path: Path, title: str) -> dict:
    """The confusion matrix as counts (rows: true class); returns what was drawn."""
    matrix = torch.tensor(confusion)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(matrix), 1.0 + 0.45 * len(matrix)))
    ax.imshow(matrix.numpy(), cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix.numpy()):
        ax.text(col, row, str(count), ha="center", va="center", fontsize=7, color="white" if count > matrix.max() / 2 else "black")
    ax.set(xlabel="predicted class", ylabel="true class", title=title, xticks=range(len(matrix)), yticks=range(len(matrix)))
    drawn = {"matrix": ax.images[0].get_array().tolist(), "texts": [t.get_text() for t in ax.texts]}  # read back from the axes
    save_figure(fig, path)
    return drawn


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _test_subset(task: Any, max_images: Optional[int]) -> Any:
    """``task`` with its test split cut to ``max_images`` images drawn by a fixed seed: the
    same indices for every target of one length (a shift keeps its source's order), so
    models and shifts are compared on the same images."""
    test = task.splits["test"]
    if max_images is None or len(test) <= max_images:
        return task
    keep = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:max_images].sort().values.tolist()
    return dataclasses.replace(task, splits={**task.splits, "test": Subset(test, keep)})


def run_evaluate(cfg: EvaluateJobConfig, run_dir: Path) -> pd.DataFrame:
    """Score the model(s) on every target; metrics.json / metrics.csv / report.md and a
    confusion-matrix plot per (model, target) in ``run_dir``."""
    if cfg.evaluate.run is None and cfg.evaluate.adapter is None:
        raise ConfigError("evaluate.run is not set: point it at a glora-retrain / glora-pipeline run dir or a model.safetensors "
                          "(or set evaluate.adapter to an adapter.safetensors)")
    targets = target_configs(cfg)  # every target checked before any model is loaded
    models = scored_models(cfg)
    device = pick_device(cfg.trainer.device)
    built: dict[tuple[int, Preprocess], Any] = {}  # a target is built once per preprocessing (a pipeline's models share one)
    rows = []
    for m in models:
        m.model.to(device)
        for i, data in enumerate(targets):
            if (i, m.preprocess) not in built:
                built[i, m.preprocess] = _test_subset(build_task(data, m.preprocess), cfg.evaluate.max_images)
            task = built[i, m.preprocess]
            if task.num_classes != m.num_classes:
                where = f"evaluate.targets[{i}] ({task.name})" if cfg.evaluate.targets else f"data (data.task={task.name})"
                raise JobError(f"{where} has {task.num_classes} classes, but model {m.label} predicts {m.num_classes}; "
                               "score it on a task with the model's classes (data.task=... or evaluate.targets=[...])")
            batches = tqdm(task.loader("test"), desc=f"{m.label} on {task.name}", unit="batch", leave=False)
            logits, labels = predict(m.model, batches, device)
            result = score(logits, labels, m.num_classes, cfg.evaluate.ece_bins)
            picture = f"confusion-{_file_name(m.label)}-{_file_name(task.name)}.png"
            plot_confusion(result["confusion"], run_dir / picture, f"{m.label} on {task.name}: acc {result['acc']:.3f}")
            rows.append({"model": m.label, "target": task.name, **{k: result[k] for k in ("images", "acc", "nll", "ece")},
                         "per_class_acc": result["per_class_acc"], "confusion": result["confusion"], "plot": picture})
            log.info("%s on %s: acc %.4f, NLL %.4f, ECE %.4f (%d images)", m.label, task.name, result["acc"], result["nll"],
                     result["ece"], result["images"])
    table = pd.DataFrame(rows)
    write_json_atomic(run_dir / "metrics.json", {"rows": rows})
    flat = table.drop(columns=["confusion", "per_class_acc", "plot"])
    atomic_write(run_dir / "metrics.csv", lambda tmp: flat.to_csv(tmp, index=False))
    write_text_atomic(run_dir / "report.md", "\n".join([
        "# Evaluation", "",
        f"Model: `{cfg.evaluate.run or cfg.evaluate.adapter}`; no training. Each target's test split"
        f"{f' (a seeded subset of {cfg.evaluate.max_images} images)' if cfg.evaluate.max_images else ''}, one forward pass per "
        f"image; `ece`: expected calibration error over {cfg.evaluate.ece_bins} confidence bins.", "",
        markdown_table(flat), "", *[f"![{r['model']} on {r['target']}]({r['plot']})" for r in rows], "",
    ]))
    return table

