"""Space: which layers GLoRA targets and which options each of A–E may take there."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from torch import nn

from .options import TENSOR_KINDS, TENSORS, Option

__all__ = ["Space", "SpaceConfig", "SpaceOptions", "LayerShape", "SpaceError", "PRESETS", "DEFAULT_TARGETS", "model_name", "classifier_name",
           "is_pointwise_conv", "linear_shape"]

#: Every qkv / proj / fc1 / fc2 Linear of a transformer block (timm ViT, DeiT, Swin, ...).
DEFAULT_TARGETS = r"(.*\.)?blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"

#: The paper's three supernets, by their largest / second rank.
PRESETS: dict[str, tuple[int, ...]] = {"large": (8, 4), "mid": (4, 2), "small": (2,)}


class SpaceError(ValueError):
    """A space that cannot be built or does not fit a model."""


@dataclass(frozen=True)
class LayerShape:
    """What the space needs to know about one targeted layer: an ``nn.Linear``, or a 1×1
    convolution (``out_features`` / ``in_features`` are its channels), which is the same
    linear map applied at every pixel."""

    out_features: int
    in_features: int
    bias: bool


def model_name(model: nn.Module) -> str:
    """The timm architecture name of ``model`` (class name for non-timm models)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def classifier_name(model: nn.Module) -> str:
    """Module name of the task head (``head`` for ViT, ``head.fc`` for Swin, ...), by timm's
    ``get_classifier()``."""
    head = model.get_classifier()
    for name, module in model.named_modules():
        if module is head:
            return name
    raise ValueError(f"cannot find the classifier of {type(model).__name__}")


def is_pointwise_conv(module: nn.Module) -> bool:
    """A 2-d convolution that is a Linear over channels at every pixel: 1×1 kernel, stride 1,
    no padding (timm's ``Conv2dSame`` pads nothing at 1×1 / stride 1), one group."""
    return (isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and tuple(module.stride) == (1, 1)
            and module.groups == 1 and (module.padding in ("same", "valid") or tuple(module.padding) == (0, 0)))


def _conv_kind(module: nn.Module) -> str:
    """How a convolution that GLoRA cannot target is described in an error."""
    kernel = "x".join(str(k) for k in module.kernel_size)
    if module.groups > 1:
        what = "depthwise" if module.groups == module.in_channels else f"grouped ({module.groups} groups)"
        return f"{what} {kernel} {type(module).__name__}"
    stride = tuple(getattr(module, "stride", (1,)))
    return f"{kernel} {type(module).__name__}" + (f" with stride {stride}" if any(s != 1 for s in stride) else "")


def linear_shape(module: nn.Module) -> LayerShape | None:
    """The shape of the ``nn.Linear`` (or 1×1 ``nn.Conv2d``) a module is, or stands for: a
    wrapper layer hands back the module it wraps through ``get_base_layer()`` (PEFT's
    tuner-layer protocol, which GLoRA's layer follows too), so the space needs no wrapper's
    internals."""
    get_base = getattr(module, "get_base_layer", None)
    base = get_base() if callable(get_base) else module
    if isinstance(base, nn.Linear):
        return LayerShape(base.out_features, base.in_features, base.bias is not None)
    if is_pointwise_conv(base):
        return LayerShape(base.out_channels, base.in_channels, base.bias is not None)
    return None


def _default_options() -> dict[str, tuple[str, ...]]:
    return {t: tuple(k) for t, k in TENSOR_KINDS.items()}


@dataclass
class Space:
    """Targeted layers (``targets``, a regex matched against full module names), the
    LoRA ``ranks`` that exist, and the ``options`` kinds each support tensor may take.

    Layers without a bias only get ``none`` for C, D and E: anything else would add a
    bias the original architecture lacks, and the merged model would no longer load
    into a plain timm model.
    """

    ranks: tuple[int, ...] = (8, 4)
    targets: str = DEFAULT_TARGETS
    options: Mapping[str, tuple[str, ...]] = field(default_factory=_default_options)
    source: str | None = field(default=None, compare=False, repr=False)  # the file it was read from, for errors

    def __post_init__(self) -> None:
        self.ranks = tuple(sorted({int(r) for r in self.ranks}, reverse=True))
        if any(r < 1 for r in self.ranks):
            raise SpaceError(f"space.ranks must be positive integers, got {self.ranks}")
        try:
            self._pattern = re.compile(self.targets)
        except re.error as err:
            raise SpaceError(f"space.targets {self.targets!r} is not a valid regex: {err}") from None
        options = {t: tuple(self.options.get(t, TENSOR_KINDS[t])) for t in TENSORS}
        for tensor in self.options:
            if tensor not in TENSORS:
                raise SpaceError(f"space.options has unknown support tensor {tensor!r}; use A, B, C, D or E")
        for tensor, kinds in options.items():
            bad = [k for k in kinds if k not in TENSOR_KINDS[tensor]]
            if bad:
                raise SpaceError(
                    f"space.options.{tensor}: {bad} not allowed; {tensor} may take {list(TENSOR_KINDS[tensor])}"
                )
            if not kinds:
                raise SpaceError(f"space.options.{tensor} is empty; give at least 'none'")
            if "lora" in kinds and not self.ranks:
                raise SpaceError(f"space.options.{tensor} has 'lora' but space.ranks is empty")
        self.options = options

    @classmethod
    def preset(cls, name: str, **kwargs: Any) -> "Space":
        """``large`` ranks (8, 4), ``mid`` (4, 2) or ``small`` (2,)."""
        if name not in PRESETS:
            raise SpaceError(f"unknown space preset {name!r}; presets are {sorted(PRESETS)}")
        return cls(ranks=PRESETS[name], **kwargs)

    @property
    def max_rank(self) -> int:
        return max(self.ranks, default=0)

    def options_for(self, tensor: str, shape: LayerShape) -> tuple[Option, ...]:
        """The legal options of ``tensor`` on a layer of ``shape``, largest first."""
        if tensor in ("C", "D", "E") and not shape.bias:
            return (Option("none"),)
        out: list[Option] = []
        for kind in self.options[tensor]:
            if kind == "lora":
                out.extend(Option("lora", r) for r in self.ranks)
            else:
                out.append(Option(kind))  # type: ignore[arg-type]
        return tuple(out)

    def choices(self, shape: LayerShape) -> dict[str, tuple[Option, ...]]:
        return {t: self.options_for(t, shape) for t in TENSORS}

    def check_ranks(self, shapes: Mapping[str, LayerShape]) -> None:
        """Refuse a rank above the width (``min(out, in)``) of the narrowest targeted layer,
        before any support tensor of that rank is built."""
        if not shapes or not self.ranks:
            return
        name = min(shapes, key=lambda n: min(shapes[n].out_features, shapes[n].in_features))
        shape = shapes[name]
        width = min(shape.out_features, shape.in_features)
        if self.max_rank > width:
            where = f"{self.source}: " if self.source else ""
            raise SpaceError(
                f"{where}space.ranks={list(self.ranks)}: rank {self.max_rank} is wider than layer {name!r} "
                f"({shape.out_features}×{shape.in_features}), the narrowest targeted layer; use ranks ≤ {width}"
            )

    def matches(self, name: str) -> bool:
        return self._pattern.fullmatch(name) is not None

    def target_layers(self, model: nn.Module) -> dict[str, LayerShape]:
        """Targeted layers of ``model`` (plain or wrapped) in module order: every module
        whose full name matches ``targets`` and that is, or stands for, an ``nn.Linear`` or
        a 1×1 convolution. Nothing inside a targeted module is a target itself. A matched
        convolution of another kind (3×3, depthwise, strided) is refused: GLoRA's maths
        holds for a linear map over features only."""
        found: dict[str, LayerShape] = {}
        for name, module in model.named_modules():
            if not self.matches(name) or any(name.startswith(f"{t}.") for t in found):
                continue
            shape = linear_shape(module)
            if shape is None and isinstance(module, nn.modules.conv._ConvNd):
                raise SpaceError(
                    f"space.targets {self.targets!r} matches {name!r}, a {_conv_kind(module)}: GLoRA targets nn.Linear and "
                    "1x1 convolutions only; narrow the pattern to the pointwise convs"
                )
            if shape is not None:
                found[name] = shape
        if not found:
            linears = [n for n, m in model.named_modules() if linear_shape(m) is not None][:6]
            raise SpaceError(
                f"space.targets {self.targets!r} matches no nn.Linear or 1x1 conv of {model_name(model)}; "
                f"its targetable layers are named like {linears}"
            )
        self.check_ranks(found)
        return found

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ranks": list(self.ranks), "targets": self.targets}
        if self.options != _default_options():
            data["options"] = {t: list(k) for t, k in self.options.items()}
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> "Space":
        """Parse a space read from a file (a layout, an adapter header, a run's identity):
        ``ranks`` a JSON list of whole numbers ≥ 1, each ``options`` entry a list of kind
        names, ``targets`` a string; ``source`` (the file) is kept for the errors raised
        when the space meets a model."""
        if not isinstance(data, Mapping):
            raise SpaceError(f"space must be an object {{ranks, targets, options}}, got {type(data).__name__}")
        unknown = set(data) - {"ranks", "targets", "options"}
        if unknown:
            raise SpaceError(f"space has unknown keys {sorted(unknown)}; keys are ranks, targets, options")
        ranks = data.get("ranks", [8, 4])
        if not isinstance(ranks, list) or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
            raise SpaceError(f"space.ranks={ranks!r} must be a JSON list of whole numbers ≥ 1, e.g. [8, 4]")
        targets = data.get("targets", DEFAULT_TARGETS)
        if not isinstance(targets, str):
            raise SpaceError(f"space.targets={targets!r} must be a regex string over module names")
        options = data.get("options", _default_options())
        if not isinstance(options, Mapping):
            raise SpaceError(f"space.options={options!r} must be an object of support tensor -> list of kinds")
        for tensor, kinds in options.items():
            if not isinstance(kinds, (list, tuple)) or not all(isinstance(k, str) for k in kinds):
                raise SpaceError(f"space.options.{tensor}={kinds!r} must be a JSON list of kinds, e.g. [\"lora\", \"none\"]")
        return cls(ranks=tuple(ranks), targets=targets, options={t: tuple(k) for t, k in options.items()}, source=source)


@dataclass
class SpaceOptions:
    """Kinds each support tensor may take (``null`` = every kind it can take)."""

    A: Optional[list[str]] = None
    B: Optional[list[str]] = None
    C: Optional[list[str]] = None
    D: Optional[list[str]] = None
    E: Optional[list[str]] = None


@dataclass
class SpaceConfig:
    """The ``space`` config group: a preset, optionally with other ranks, targets or options."""

    preset: Optional[str] = "large"
    ranks: Optional[list[int]] = None  # replaces the preset's ranks
    targets: Optional[str] = None  # a regex over module names; null: the backbone family's (ViT: DEFAULT_TARGETS)
    options: SpaceOptions = field(default_factory=SpaceOptions)

    def build(self, default_targets: str = DEFAULT_TARGETS) -> Space:
        """The space; ``default_targets`` stands in for an unset ``targets`` (the app passes
        its backbone family's)."""
        if self.ranks is not None:
            ranks = tuple(self.ranks)
        elif self.preset in PRESETS:
            ranks = PRESETS[self.preset]
        else:
            raise SpaceError(f"space.preset={self.preset!r} is unknown; presets are {sorted(PRESETS)} (or set space.ranks)")
        options = {t: tuple(getattr(self.options, t)) for t in TENSORS if getattr(self.options, t) is not None}
        return Space(ranks=ranks, targets=self.targets if self.targets is not None else default_targets, options=options)
