"""The GLoRA supernet: the layer, wrapping a timm model in place, fixing layouts, merging."""
from .layer import UP_INITS, VECTOR_B, ChoiceSampler, GLoRALinear, parameterisation
from .wrap import GLoRAConfig, glora_layers, is_wrapped, merge, param_groups, merged_inference, reseed, set_layout, space_of, support_parameters, wrap

__all__ = [
    "UP_INITS", "VECTOR_B", "ChoiceSampler", "GLoRALinear", "parameterisation",
    "GLoRAConfig", "glora_layers", "is_wrapped", "merge", "param_groups", "merged_inference", "reseed", "set_layout", "space_of", "support_parameters", "wrap",
]
