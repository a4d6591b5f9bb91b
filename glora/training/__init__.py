"""The one training loop (``fit``, with checkpoint and run-file callbacks) and the one
inference loop (``predict``)."""
from .callbacks import Checkpoint, RunFiles
from .inference import evaluate, pre_logits, predict
from .loop import Callback, LoopState, OptimConfig, StepHook, StepMember, TaskLoaders, TrainerConfig, fit, step_loss, step_seed, warmup_cosine

__all__ = [
    "Callback", "Checkpoint", "LoopState", "OptimConfig", "RunFiles", "StepHook", "StepMember", "TaskLoaders", "TrainerConfig",
    "evaluate", "fit", "pre_logits", "predict", "step_loss", "step_seed", "warmup_cosine",
]
