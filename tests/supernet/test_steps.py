"""The GLoRA optimiser steps (supernet/config.py, wrap.param_groups): lr multipliers, fixed lrs,
relative steps per layer, up-factor inits, against direct computations."""
import pytest


def test_lr_multipliers_scale_each_support_tensor_and_nothing_else():
    from conftest import make_vit

    from glora.spaces import Space
    from glora.supernet import glora_layers, param_groups, wrap

    model = wrap(make_vit(), Space.preset("large"), modules_to_train=("head",))
    groups = {g["name"]: g for g in param_groups(model, 1e-3, {"A": 30, "D": 5})}
    layer = next(iter(glora_layers(model).values()))
    assert groups["A"]["lr"] == pytest.approx(3e-2) and groups["D"]["lr"] == pytest.approx(5e-3) and groups["rest"]["lr"] == 1e-3
    ids = lambda name: {id(p) for p in groups[name]["params"]}  # noqa: E731
    assert id(layer.Ad) in ids("A") and id(layer.Au) in ids("A") and id(layer.D) in ids("D")
    assert id(layer.Bd) in ids("rest") and id(model.head.weight) in ids("rest")
    assert sum(len(g["params"]) for g in groups.values()) == sum(p.requires_grad for p in model.parameters())
    (only,) = param_groups(model, 1e-3, {})
    assert [id(p) for p in only["params"]] == [id(p) for p in model.parameters() if p.requires_grad]  # the old single group
    # A fixed lr ignores lr and the multiplier; the others still follow lr.
    for lr in (1e-3, 1e-2):
        groups = {g["name"]: g for g in param_groups(model, lr, {"A": 30, "D": 30}, {"A": 0.05, "B": None, "E": 2e-3})}
        assert groups["A"]["lr"] == 0.05 and groups["E"]["lr"] == 2e-3
        assert groups["D"]["lr"] == pytest.approx(30 * lr) and groups["rest"]["lr"] == lr and "B" not in groups
        assert id(layer.Ad) in {id(p) for p in groups["A"]["params"]} and id(layer.E) in {id(p) for p in groups["E"]["params"]}
        assert sum(len(g["params"]) for g in groups.values()) == sum(p.requires_grad for p in model.parameters())


def _first_step_moves(scale: float, relative: dict | None):
    """mean|ΔW|, mean|Δb| of every layer after one AdamW step of a vector-A, vector-D layout on
    a tiny ViT whose targeted weights and biases are ``scale`` times the reference ones."""
    import torch
    import torch.nn.functional as F
    from conftest import make_vit

    from glora.spaces import Layout, Space
    from glora.supernet import glora_layers, param_groups, set_layout, wrap

    model = make_vit()
    space = Space.preset("large")
    with torch.no_grad():
        for name in space.target_layers(model):
            layer = model.get_submodule(name)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=torch.Generator().manual_seed(7)) * 0.05)
            layer.weight.mul_(scale)
            layer.bias.mul_(scale)
    wrap(model, space)
    set_layout(model, Layout.uniform(model, space, A="vector", D="vector"))
    layers = glora_layers(model)
    before = {n: [t.detach().clone() for t in layer.merged_weight_and_bias()] for n, layer in layers.items()}
    opt = torch.optim.AdamW(param_groups(model, 1e-3, {"A": 30, "D": 30}, {}, relative), lr=1e-3, weight_decay=0.0)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    F.cross_entropy(model(images), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    after = {n: layer.merged_weight_and_bias() for n, layer in layers.items()}
    return {n: ((after[n][0] - w).abs().mean().item(), (after[n][1] - b).abs().mean().item()) for n, (w, b) in before.items()}


def test_a_relative_step_moves_w_and_b_by_the_same_amount_whatever_the_weight_scale():
    """Adam's first step moves each element by ~lr, so W0 ⊙ A moves W by |W0| × A's lr: with
    ``relative_step`` every layer's W moves by relative × lr (b by D's), on weights of any
    scale; with a constant multiplier the move grows with |W0| (the failure it fixes)."""
    relative = {"A": 1.0, "D": 0.5}
    moves = {scale: _first_step_moves(scale, relative) for scale in (1.0, 10.0)}
    for name, (dw, db) in moves[1.0].items():
        assert dw == pytest.approx(1e-3, rel=0.02) and moves[10.0][name][0] == pytest.approx(dw, rel=0.02), name
        if not name.endswith("qkv"):  # a key bias never changes attention: a third of qkv's D gets ~no gradient
            assert db == pytest.approx(0.5e-3, rel=0.02) and moves[10.0][name][1] == pytest.approx(db, rel=0.02), name
    small, large = _first_step_moves(1.0, None), _first_step_moves(10.0, None)
    for name in small:  # lr_mult: the step grows with |W0| and |b0|
        assert large[name][0] == pytest.approx(10 * small[name][0], rel=0.05), name
        assert name.endswith("qkv") or large[name][1] == pytest.approx(10 * small[name][1], rel=0.05), name


def test_relative_step_groups_are_per_layer_and_refuse_tensors_without_a_base():
    from conftest import make_vit

    from glora.spaces import Space
    from glora.supernet import glora_layers, param_groups, wrap

    model = wrap(make_vit(), Space.preset("large"), modules_to_train=("head",))
    groups = {g["name"]: g for g in param_groups(model, 1e-3, {"A": 30, "D": 30}, {"E": 2e-3}, {"A": 2.0})}
    for name, layer in glora_layers(model).items():
        group = groups[f"A:{name}"]
        assert group["lr"] == pytest.approx(1e-3 * 2.0 / layer.weight.abs().mean().item())
        assert {id(p) for p in group["params"]} == {id(layer.Ad), id(layer.Au)}
    assert groups["D"]["lr"] == pytest.approx(3e-2) and groups["E"]["lr"] == 2e-3  # D still on lr_mult
    assert sum(len(g["params"]) for g in groups.values()) == sum(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="not \\['B'\\]"):
        param_groups(model, 1e-3, {}, {}, {"B": 1.0})
    with pytest.raises(ValueError, match="both a fixed lr and a relative step"):
        param_groups(model, 1e-3, {}, {"A": 1e-2}, {"A": 1.0})


def _lrs_fit_steps_at(cache_dir, monkeypatch, *overrides: str):
    """The wrapped model, and each optimizer group's lr at the first step of the ``fit`` that
    a train job's config (with ``overrides``) builds."""
    import torch
    from conftest import job_config

    from glora.stages.setup import wrapped_backbone
    from glora.training import fit

    cfg = job_config("train", cache_dir, *overrides, "optim.lr=1e-3", "trainer.max_steps=1", "optim.warmup_epochs=0")
    model, _, task = wrapped_backbone(cfg, cfg.space.build())
    seen = {}
    real_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        seen.update({g["name"]: g["lr"] for g in self.param_groups})
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    fit(model, task, cfg.optim, cfg.trainer, ("train", "val"), groups=cfg.optim.groups(model))
    return model, seen


def test_fixed_lrs_reach_the_optimizer(cache_dir, monkeypatch):
    """The config path: optim.fixed_lr.A is the A group's lr in the optimizer fit builds,
    and the schedule scales it like every other group."""
    _, seen = _lrs_fit_steps_at(cache_dir, monkeypatch, "optim.fixed_lr.A=0.05")
    assert seen["A"] == pytest.approx(0.05) and seen["D"] == pytest.approx(30e-3) and seen["rest"] == pytest.approx(1e-3)


def test_relative_steps_reach_the_optimizer(cache_dir, monkeypatch):
    """The config path: optim.relative_step.D=0.5 gives every layer's D group lr × 0.5 / mean|b0|
    in the optimizer fit builds (A stays on lr_mult)."""
    from glora.supernet import glora_layers

    model, seen = _lrs_fit_steps_at(cache_dir, monkeypatch, "optim.relative_step.D=0.5")
    expected = {f"D:{n}": 0.5e-3 / layer.bias.abs().mean().item() for n, layer in glora_layers(model).items()}
    assert seen["A"] == pytest.approx(30e-3) and "D" not in seen
    assert {k: v for k, v in seen.items() if k.startswith("D:")} == pytest.approx(expected)


@pytest.mark.parametrize("init, bound", [("kaiming", lambda r, c: (1 / c) ** 0.5), ("xavier", lambda r, c: (6 / (r + c)) ** 0.5)])
def test_up_factor_inits(init, bound):
    from conftest import make_vit

    from glora.spaces import Space
    from glora.supernet import glora_layers, wrap

    layer = next(iter(glora_layers(wrap(make_vit(), Space.preset("large"), up_init=init)).values()))
    r, c = layer.Au.shape
    assert layer.Au.abs().max().item() <= bound(r, c) + 1e-7 and layer.Au.abs().max().item() > 0.5 * bound(r, c)
    assert layer.Ad.abs().max().item() == 0  # identity at init either way


def test_reports_name_the_steps_that_train_each_support_tensor():
    """A report must not claim a 30x multiplier for a tensor whose lr a fixed lr or a relative
    step replaces."""
    from glora.stages.config import GLoRAOptimConfig as OptimConfig
    from glora.supernet import FixedLrs, RelativeSteps

    assert OptimConfig().describe_steps() == "lr multipliers {'A': 30.0, 'B': 1.0, 'C': 1.0, 'D': 30.0, 'E': 1.0}"
    text = OptimConfig(fixed_lr=FixedLrs(E=0.01), relative_step=RelativeSteps(A=0.25, D=0.1)).describe_steps()
    assert text == ("lr multipliers {'B': 1.0, 'C': 1.0}; fixed lrs {'E': 0.01}; "
                    "steps relative to each layer's mean|W0| (A) / mean|b0| (D) {'A': 0.25, 'D': 0.1}")
