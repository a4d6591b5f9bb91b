"""The frozen backbone every job starts from, and the one door to ``timm.create_model``:
the embedded default (read from its cache; making it is ``glora.embedded_backbone``'s job)
or a timm model by name with a local checkpoint file — never a hub download."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import timm
from timm.data import resolve_data_config
from timm.models import load_state_dict
from torch import nn

from glora.data import Preprocess
from glora.run.errors import CheckpointError

__all__ = ["ModelConfig", "BackboneSpec", "EMBEDDED", "build_model", "classifier_name", "create_model", "load_backbone"]

EMBEDDED = "embedded"  # model.name of the embedded default backbone

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """``name=embedded`` uses the cached embedded backbone; any other timm name needs a
    local ``checkpoint`` file (safetensors, or a torch file read with weights_only)
    unless ``pretrained=false`` asks for random init."""

    name: str = "embedded"
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[str] = None
    pretrained: bool = True


@dataclass
class BackboneSpec:
    """What ``backbone.json`` records: how to rebuild the model and feed it."""

    name: str
    kwargs: dict[str, Any]
    preprocess: Preprocess
    source: str  # embedded | file | random
    checkpoint: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocess"] = asdict(self.preprocess)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BackboneSpec":
        pre = data["preprocess"]
        return cls(
            data["name"], dict(data["kwargs"]),
            Preprocess(pre["img_size"], tuple(pre["mean"]), tuple(pre["std"])),
            data["source"], data.get("checkpoint"),
        )


def classifier_name(model: nn.Module) -> str:
    """Module name of the task head (``head`` for ViT, ``head.fc`` for Swin, ...)."""
    head = model.get_classifier()
    for name, module in model.named_modules():
        if module is head:
            return name
    raise ValueError(f"cannot find the classifier of {type(model).__name__}")


def _load_weights(model: nn.Module, path: Path, what: str) -> None:
    """Load everything but the classifier, strictly; one clear error otherwise."""
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as err:  # safetensors / torch raise many types for a bad file
        raise CheckpointError(f"{what} {str(path)!r} cannot be read (truncated or not a weights file?): {err}") from None
    head = classifier_name(model)
    state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    expected = {k for k in model.state_dict() if not k.startswith(head + ".")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    name = model.pretrained_cfg.get("architecture", type(model).__name__)
    if missing or unexpected:
        raise CheckpointError(
            f"{what} {str(path)!r} does not fit {name}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); is it a checkpoint of another model?"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err))
        raise CheckpointError(f"{what} {str(path)!r} does not fit {name}: {first}") from None


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` at random init (weights only ever come from local files);
    a bad name or kwargs is one clear error."""
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    except RuntimeError as err:
        raise CheckpointError(f"model.name={name!r}: {err}") from None
    except TypeError as err:
        raise CheckpointError(f"model.kwargs do not fit {name!r}: {err}") from None


def build_model(spec: BackboneSpec, num_classes: int) -> nn.Module:
    """The architecture ``spec`` records, with a fresh ``num_classes`` head."""
    return create_model(spec.name, num_classes, **spec.kwargs)


def load_backbone(cfg: ModelConfig, num_classes: int, embedded_dir: Path | None = None) -> tuple[nn.Module, BackboneSpec]:
    """The pretrained backbone with a fresh ``num_classes`` head, and how it was made. The
    embedded one is read from ``embedded_dir``; it is made beforehand, never here."""
    if cfg.name == EMBEDDED:
        if embedded_dir is None or not (embedded_dir / "backbone.json").is_file():
            raise CheckpointError(
                f"no embedded backbone in {embedded_dir}: run glora-pretrain first (every job does this itself), "
                "or point model.name / model.checkpoint at a timm model"
            )
        spec = BackboneSpec.from_dict(json.loads((embedded_dir / "backbone.json").read_text()))
        model = build_model(spec, num_classes)
        _load_weights(model, embedded_dir / "backbone.safetensors", "cached embedded backbone")
        return model, spec
    model = create_model(cfg.name, num_classes, **cfg.kwargs)
    data = resolve_data_config({}, model=model)
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None) or data["input_size"][-2:]
    pre = Preprocess(int(img_size[0]), tuple(data["mean"]), tuple(data["std"]))
    if cfg.checkpoint:
        _load_weights(model, Path(cfg.checkpoint).expanduser(), "model.checkpoint")
        return model, BackboneSpec(cfg.name, dict(cfg.kwargs), pre, "file", str(Path(cfg.checkpoint).expanduser().resolve()))
    if cfg.pretrained:
        raise CheckpointError(
            f"model.name={cfg.name!r} needs local weights: set model.checkpoint=/path/to/file "
            "(no hub downloads here), or model.pretrained=false for a random init"
        )
    return model, BackboneSpec(cfg.name, dict(cfg.kwargs), pre, "random")
