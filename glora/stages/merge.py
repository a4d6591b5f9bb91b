"""Merge: re-parameterise a retrained layout into the plain backbone, checked against the
unmerged model on the report split. The adapter file (only the layout's support-tensor
slices and the head, kilobytes, for ``supernet.load_adapter`` onto the same backbone) is
written first: it needs the GLoRA layers that the merge unloads."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from glora.run import distributed
from glora.supernet import merge, save_adapter, to_peft
from glora.training import predict

from .handoff import Merged, Retrained

__all__ = ["merge_checked"]

log = logging.getLogger(__name__)


def merge_checked(trained: Retrained, run_dir: Path, peft: bool = False) -> Merged:
    """Adapter file (and with ``peft`` the PEFT GLoRA adapter in ``peft/``), then the merge,
    then merged vs unmerged predictions on the report split."""
    model, layout, task, split = trained.model, trained.layout, trained.task, trained.report_split
    loader = task.loader(split)
    unmerged, labels = predict(model, loader, trained.device)
    head_params = sum(p.numel() for p in model.get_classifier().parameters())
    adapter_bytes = peft_bytes = None
    if distributed.is_main():
        adapter = save_adapter(run_dir / "adapter.safetensors", model, layout, {"kwargs": trained.spec.kwargs, "num_classes": task.num_classes})
        adapter_bytes = adapter.stat().st_size
        if peft:
            peft_bytes = (to_peft(model, layout, run_dir / "peft") / "adapter_model.safetensors").stat().st_size
    merge(model)
    merged, _ = predict(model, loader, trained.device)
    max_diff = (merged - unmerged).abs().max().item()
    merged_pred, unmerged_pred = merged.argmax(-1), unmerged.argmax(-1)
    same = bool(torch.equal(merged_pred, unmerged_pred))
    if not same:
        log.warning("merged and unmerged predictions differ on %d images (max logit diff %.2e)", int((merged_pred != unmerged_pred).sum()), max_diff)
    metrics = {
        "task": task.name, "protocol": trained.protocol, "report_split": split,
        f"{split}_acc": (merged_pred == labels).float().mean().item(),
        f"{split}_acc_unmerged": (unmerged_pred == labels).float().mean().item(),
        "merged_predictions_equal": same, "merged_max_logit_diff": max_diff,
        "trainable_params": layout.trainable_params, "head_params": head_params, "layout_hash": layout.hash,
        "adapter_bytes": adapter_bytes, **({"peft_adapter_bytes": peft_bytes} if peft else {}), "lr": trained.lr,
    }
    return Merged(model, metrics)
