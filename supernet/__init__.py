"""The GLoRA supernet: the layer, wrapping a timm model in place, fixing layouts, merging,
the settings a job gives them (``config``), the training loop's step hook (``sampling``),
the adapter file (a fixed layout's slices and the head, apart from the backbone) and its PEFT twin (``peft_io``: PEFT GLoRA adapters out and in)."""
from .adapter import ADAPTER_FORMAT, adapter_state, backbone_digest, load_adapter, save_adapter
from .config import FixedLrs, GLoRAConfig, LrMultipliers, RelativeSteps, SupportSteps
from .layer import UP_INITS, VECTOR_B, ChoiceSampler, GLoRALinear, parameterisation
from .peft_io import PEFT_FILES, PeftExportError, check_peft_exportable, from_peft, peft_available, peft_forms, to_peft
from .sampling import EVAL_SEED, RANDOM_LAYOUT, StepLayout, SupernetSteps, extreme_layers, release_step_layout, use_step_layout
from .wrap import (
    glora_layers,
    is_wrapped,
    merge,
    merged_inference,
    param_groups,
    reseed,
    set_layout,
    space_of,
    support_parameters,
    vector_b_of,
    wrap,
)

__all__ = [
    "ADAPTER_FORMAT", "adapter_state", "backbone_digest", "load_adapter", "save_adapter",
    "FixedLrs", "GLoRAConfig", "LrMultipliers", "RelativeSteps", "SupportSteps",
    "UP_INITS", "VECTOR_B", "ChoiceSampler", "GLoRALinear", "parameterisation",
    "PEFT_FILES", "PeftExportError", "check_peft_exportable", "from_peft", "peft_available", "peft_forms", "to_peft",
    "EVAL_SEED", "RANDOM_LAYOUT", "StepLayout", "SupernetSteps", "extreme_layers", "release_step_layout", "use_step_layout",
    "glora_layers", "is_wrapped", "merge", "param_groups", "merged_inference", "reseed", "set_layout", "space_of", "support_parameters", "vector_b_of", "wrap",
]
