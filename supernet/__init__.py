"""The GLoRA supernet: the layer, wrapping a timm model in place, fixing layouts, merging."""
from .layer import ChoiceSampler, GLoRALinear
from .wrap import glora_layers, is_wrapped, merge, merged_inference, reseed, set_layout, space_of, support_parameters, wrap

__all__ = [
    "ChoiceSampler", "GLoRALinear",
    "glora_layers", "is_wrapped", "merge", "merged_inference", "reseed", "set_layout", "space_of", "support_parameters", "wrap",
]
