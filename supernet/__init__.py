"""The GLoRA supernet: the layer, wrapping a timm model in place, fixing layouts, merging."""
from .layer import UP_INITS, ChoiceSampler, GLoRALinear
from .wrap import GLoRAConfig, glora_layers, is_wrapped, merge, param_groups, merged_inference, reseed, set_layout, space_of, support_parameters, wrap

__all__ = [
    "UP_INITS", "ChoiceSampler", "GLoRALinear",
    "GLoRAConfig", "glora_layers", "is_wrapped", "merge", "param_groups", "merged_inference", "reseed", "set_layout", "space_of", "support_parameters", "wrap",
]
