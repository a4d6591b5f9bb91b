"""Linear probe: how linearly separable a backbone's frozen features make a task (the
transfer check of a pretrained backbone against random init)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from glora.training import pre_logits, predict

__all__ = ["linear_probe"]


def linear_probe(model: nn.Module, train: DataLoader, test: DataLoader, device: torch.device) -> float:
    """Test accuracy of a logistic regression on standardised pre-logit features."""
    from sklearn.linear_model import LogisticRegression

    model.to(device)
    x_train, y_train = (t.numpy() for t in predict(model, train, device, forward=pre_logits))
    x_test, y_test = (t.numpy() for t in predict(model, test, device, forward=pre_logits))
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000).fit((x_train - mean) / std, y_train)
    return float(clf.score((x_test - mean) / std, y_test))
