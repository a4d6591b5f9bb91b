"""The one training loop's pieces against direct computations: the lr schedule, the
per-step layout seed, the inference loop, and the curves plot's drawn series."""
import math

import pandas as pd
import pytest
import torch
from torch import nn

from glora.run.plots import plot_curves
from glora.training import predict, step_seed, warmup_cosine


def _lrs(warmup, total, min_ratio=0.0, base=0.1, steps=None):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    sched = warmup_cosine(opt, warmup, total, min_ratio)
    out = []
    for _ in range(steps or total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_cosine_matches_the_formula():
    base, warmup, total, floor = 0.1, 4, 20, 0.1
    lrs = _lrs(warmup, total, floor, base, steps=total + 3)
    for step, lr in enumerate(lrs):
        if step < warmup:
            want = base * (step + 1) / warmup
        else:
            progress = min(1.0, (step - warmup) / (total - warmup))
            want = base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
        assert lr == pytest.approx(want, rel=1e-12), step
    assert lrs[warmup - 1] == pytest.approx(base) and lrs[total] == pytest.approx(base * floor)  # peak, then the floor
    assert all(a >= b for a, b in zip(lrs[warmup - 1 :], lrs[warmup:]))  # never rises after warm-up


def test_warmup_cosine_without_warmup_starts_at_base():
    assert _lrs(0, 10)[0] == pytest.approx(0.1) and _lrs(0, 10)[-1] < 0.01


def test_step_seed_differs_per_step_and_run_and_is_stable():
    seeds = {step_seed(run, step) for run in range(4) for step in range(1000)}
    assert len(seeds) == 4000  # no two (run, step) pairs draw the same layouts
    assert step_seed(3, 17) == step_seed(3, 17) == (3 * 1_000_003 + 17)
    assert 0 <= step_seed(2**62, 2**40) < 2**63 - 1  # a valid torch seed at any size


def test_predict_matches_a_direct_forward_and_restores_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.5), nn.Linear(4, 3)).train()
    x, y = torch.randn(10, 6), torch.arange(10) % 3
    logits, labels = predict(model, [(x[:4], y[:4]), (x[4:], y[4:])], torch.device("cpu"))
    assert model.training  # mode restored
    with torch.no_grad():
        want = model.eval()(x)
    assert torch.allclose(logits, want) and torch.equal(labels, y)
    feats, _ = predict(model, [(x, y)], torch.device("cpu"), forward=lambda m, images: m[0](images))
    assert feats.shape == (10, 4)


@pytest.mark.parametrize("split", ["val", "test"])
def test_curves_draw_train_against_the_split_the_run_evaluates(tmp_path, split):
    """A VTAB retrain evaluates `test`: its curve must be drawn too (it once was not)."""
    table = pd.DataFrame({"epoch": [1, 2, 3], "train/loss": [2.0, 1.5, 1.0], "train/acc": [0.2, 0.4, 0.6],
                          f"{split}/loss": [2.1, 1.7, 1.4], f"{split}/acc": [0.1, 0.3, 0.5]})
    drawn = plot_curves(table, tmp_path / "curves.png", "t")
    assert drawn["acc"][split] == ([1.0, 2.0, 3.0], [0.1, 0.3, 0.5])
    assert drawn["loss"]["train"] == ([1.0, 2.0, 3.0], [2.0, 1.5, 1.0])
    assert set(drawn["acc"]) == {"train", split}
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
