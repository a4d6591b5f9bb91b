"""Linear probe: how linearly separable a backbone's features make a task (transfer check)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["features", "linear_probe"]


@torch.no_grad()
def features(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Pre-logit features (what the head sees) and labels."""
    model.eval()
    feats, labels = [], []
    for images, y in loader:
        x = model.forward_features(images.to(device))
        feats.append(model.forward_head(x, pre_logits=True).float().cpu().numpy())
        labels.append(np.asarray(y))
    return np.concatenate(feats), np.concatenate(labels)


def linear_probe(model: nn.Module, train: DataLoader, test: DataLoader, device: torch.device) -> float:
    """Test accuracy of a logistic regression on standardised frozen features."""
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = features(model, train, device)
    x_test, y_test = features(model, test, device)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000).fit((x_train - mean) / std, y_train)
    return float(clf.score((x_test - mean) / std, y_test))
