"""The one training loop (``fit``, with checkpoint and run-file callbacks) and the one
inference loop (``predict``)."""
from .callbacks import Checkpoint, RunFiles
from .inference import evaluate, pre_logits, predict
from .loop import EVAL_SEED, Callback, LoopState, OptimConfig, TrainerConfig, fit, step_loss, step_seed, warmup_cosine

__all__ = [
    "EVAL_SEED", "Callback", "Checkpoint", "LoopState", "OptimConfig", "RunFiles", "TrainerConfig",
    "evaluate", "fit", "pre_logits", "predict", "step_loss", "step_seed", "warmup_cosine",
]
