"""Linear probes: how linearly separable a backbone's frozen features make a task (the
transfer check of a pretrained backbone against random init), and the logistic probe of
the accuracy benchmark, whose C is chosen on val like every other method's lr."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from glora.training import pre_logits, predict

__all__ = ["linear_probe", "logreg_grid", "probe_grid"]


def linear_probe(model: nn.Module, train: DataLoader, test: DataLoader, device: torch.device) -> float:
    """Test accuracy of a logistic regression on standardised pre-logit features."""
    from sklearn.linear_model import LogisticRegression

    model.to(device)
    x_train, y_train = (t.numpy() for t in predict(model, train, device, forward=pre_logits))
    x_test, y_test = (t.numpy() for t in predict(model, test, device, forward=pre_logits))
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000).fit((x_train - mean) / std, y_train)
    return float(clf.score((x_test - mean) / std, y_test))


def probe_grid(model: nn.Module, loaders: dict[str, DataLoader], device: torch.device, Cs) -> dict:
    """The logistic probe on ``model``'s frozen pre-logit features of ``loaders["train"]``,
    ``["val"]`` and ``["test"]``: ``logreg_grid`` of them (C chosen on val, refit on
    train+val, scored once on test)."""
    model.to(device)
    features = {split: tuple(t.numpy() for t in predict(model, loaders[split], device, forward=pre_logits)) for split in ("train", "val", "test")}
    return logreg_grid(features, Cs)


def logreg_grid(features: dict[str, tuple[np.ndarray, np.ndarray]], Cs) -> dict:
    """A logistic regression (lbfgs, standardised features) per C of ``Cs`` fit on
    ``features["train"]`` and scored on ``["val"]``; the best val accuracy picks C (a tie
    goes to the smaller C, the stronger regularisation); then train+val is refit at that C
    and scored on ``["test"]``. Deterministic given the features: no seed enters.
    Returns ``{"C", "val_acc": {C: acc}, "trainval_acc", "test_acc", "features", "classes"}``."""
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (features[s] for s in ("train", "val", "test"))
    val = {float(c): _Standardised(x_train, y_train, c).score(x_val, y_val) for c in Cs}
    best = max(val, key=lambda c: (val[c], -c))
    final = _Standardised(np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]), best)
    return {"C": best, "val_acc": val, "trainval_acc": final.score(np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])),
            "test_acc": final.score(x_test, y_test), "features": int(x_train.shape[1]), "classes": int(len(final.classes))}


class _Standardised:
    """A logistic regression on features standardised by its training set's mean and std."""

    def __init__(self, x: np.ndarray, y: np.ndarray, C: float):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        with warnings.catch_warnings():  # a large C on separable features stops at max_iter; its val score still says how good it is
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.clf = LogisticRegression(C=float(C), max_iter=2000).fit((x - self.mean) / self.std, y)
        self.classes = self.clf.classes_

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self.clf.score((x - self.mean) / self.std, y))
