"""The GLoRA supernet: the layer, wrapping a timm model in place, fixing layouts, merging,
and the adapter file (a fixed layout's slices and the head, apart from the backbone)."""
from .adapter import ADAPTER_FORMAT, adapter_state, load_adapter, save_adapter
from .layer import UP_INITS, VECTOR_B, ChoiceSampler, GLoRALinear, parameterisation
from .sampling import RANDOM_LAYOUT, StepLayout, extreme_layers, release_step_layout, use_step_layout
from .wrap import GLoRAConfig, glora_layers, is_wrapped, merge, param_groups, merged_inference, reseed, set_layout, space_of, support_parameters, vector_b_of, wrap

__all__ = [
    "ADAPTER_FORMAT", "adapter_state", "load_adapter", "save_adapter",
    "UP_INITS", "VECTOR_B", "ChoiceSampler", "GLoRALinear", "parameterisation",
    "RANDOM_LAYOUT", "StepLayout", "extreme_layers", "release_step_layout", "use_step_layout",
    "GLoRAConfig", "glora_layers", "is_wrapped", "merge", "param_groups", "merged_inference", "reseed", "set_layout", "space_of", "support_parameters", "vector_b_of", "wrap",
]
