"""The frozen backbone every job starts from, and the one door to ``timm.create_model``:
the embedded default (read from its cache; making it is ``glora.backbones.embedded``'s job)
or a timm model by name with a local checkpoint file — never a hub download."""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import timm
from timm.data import resolve_data_config
from timm.models import load_state_dict
from torch import nn

from glora.data import Preprocess
from glora.run.checkpoint import refused_message, weights_only_refused
from glora.run.errors import CheckpointError, require
from glora.spaces import classifier_name

from .families import family_of
from .packaged import PREFIX, packaged_checkpoint

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
    checkpoint: Optional[str] = None  # a local file, or package:<name> (glora.backbones.packaged)
    pretrained: bool = True
    img_size: Optional[int] = None  # input size (a ViT is built at it, position embeddings resampled; a CNN is fed it)

    def __post_init__(self) -> None:
        require(self.img_size is None or (isinstance(self.img_size, int) and self.img_size >= 1), "model.img_size", self.img_size,
                "use null (the model's own size) or a positive number of pixels, e.g. model.img_size=224")
        require(self.img_size is None or self.name != EMBEDDED, "model.img_size", self.img_size,
                "the embedded backbone has one input size (32 px); drop model.img_size, or set model.name to a timm model")


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


def _load_weights(model: nn.Module, path: Path, what: str) -> None:
    """Load everything but the classifier, strictly; one clear error otherwise."""
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as err:  # safetensors / torch raise many types for a bad file
        if weights_only_refused(err):  # torch's text advises weights_only=False: never shown
            raise CheckpointError(f"{what}: {refused_message(path)}") from None
        raise CheckpointError(f"{what} {str(path)!r} cannot be read (truncated or not a weights file?): {err}") from None
    head = classifier_name(model)
    state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    state = _fit_to(model, state)
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


def _fit_to(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint adapted to the model's size through timm's own filter of its family
    (for ViTs: position embeddings resampled to another image size, bicubic)."""
    family = sys.modules.get(type(model).__module__)
    adapt = getattr(family, "checkpoint_filter_fn", None)
    if adapt is None or "pos_embed" not in state:
        return state
    want = model.state_dict().get("pos_embed")
    if want is None or state["pos_embed"].shape == want.shape:
        return state
    return adapt(state, model)


def _check_fits(name: str, kwargs: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Vets converted tensors against the timm model ``name`` (default size): every
    parameter but the head present, nothing extra, shapes equal."""

    def check(tensors: dict[str, Any]) -> None:
        want = {k: v.shape for k, v in create_model(name, 0, **kwargs).state_dict().items()}
        missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
        wrong = [k for k in want if k in tensors and tuple(tensors[k].shape) != tuple(want[k])]
        if missing or extra or wrong:
            raise CheckpointError(f"converted weights do not fit {name}: missing {missing[:3]}, extra {extra[:3]}, "
                                  f"shape mismatch {wrong[:3]}")

    return check


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


def load_backbone(
    cfg: ModelConfig, num_classes: int, embedded_dir: Path | None = None, cache_root: str | Path = "runs/cache"
) -> tuple[nn.Module, BackboneSpec]:
    """The pretrained backbone with a fresh ``num_classes`` head, and how it was made. The
    embedded one is read from ``embedded_dir``; it is made beforehand, never here. A
    ``package:<name>`` checkpoint is converted once into ``cache_root``."""
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
    kwargs = family_of(cfg.name).build_kwargs(cfg.kwargs, cfg.img_size)
    model = create_model(cfg.name, num_classes, **kwargs)
    data = resolve_data_config({}, model=model)
    built_at = getattr(getattr(model, "patch_embed", None), "img_size", None)  # a ViT's own size
    size = built_at[0] if built_at else cfg.img_size or data["input_size"][-1]
    pre = Preprocess(int(size), tuple(data["mean"]), tuple(data["std"]))
    if cfg.checkpoint and cfg.checkpoint.startswith(PREFIX):
        path = packaged_checkpoint(cfg.checkpoint[len(PREFIX):], cache_root, _check_fits(cfg.name, cfg.kwargs))
        _load_weights(model, path, "model.checkpoint")
        return model, BackboneSpec(cfg.name, kwargs, pre, "package", cfg.checkpoint)
    if cfg.checkpoint:
        _load_weights(model, Path(cfg.checkpoint).expanduser(), "model.checkpoint")
        return model, BackboneSpec(cfg.name, kwargs, pre, "file", str(Path(cfg.checkpoint).expanduser().resolve()))
    if cfg.pretrained:
        raise CheckpointError(
            f"model.name={cfg.name!r} needs local weights: set model.checkpoint=/path/to/file "
            "(no hub downloads here), or model.pretrained=false for a random init"
        )
    return model, BackboneSpec(cfg.name, kwargs, pre, "random")
