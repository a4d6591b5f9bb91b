"""Search spaces and layouts: which layers GLoRA targets, which A–E forms exist, and one
concrete choice per layer (``Layout``) with its ``glora-layout/1`` JSON."""
from .layout import FORMAT, Choice, Layout, LayoutError, TunedLr
from .options import TENSOR_KINDS, TENSORS, Option, OptionError, option_cost, parse_option
from .space import DEFAULT_TARGETS, PRESETS, LayerShape, Space, SpaceConfig, SpaceError, classifier_name, is_pointwise_conv, linear_shape, model_name

__all__ = [
    "FORMAT", "Choice", "Layout", "LayoutError", "TunedLr",
    "TENSOR_KINDS", "TENSORS", "Option", "OptionError", "option_cost", "parse_option",
    "DEFAULT_TARGETS", "PRESETS", "LayerShape", "Space", "SpaceConfig", "SpaceError", "classifier_name", "is_pointwise_conv", "linear_shape", "model_name",
]
