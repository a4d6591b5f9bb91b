"""Supernet sampling rules (uniform, budget band, sandwich, in-place distillation) against
direct computations: what a step trains, which tensors receive gradient, what a
distilling layout's loss is, and that a planned step leaves the supernet as it found it."""
import pytest
import torch
import torch.nn.functional as F
from conftest import make_vit

from glora.run.errors import ConfigError
from glora.search import Budget, LayoutOps
from glora.spaces import Layout, Space
from glora.stages.sampling import SamplingConfig, step_plan
from glora.supernet import StepLayout, SupernetSteps, extreme_layers, glora_layers, set_layout, wrap
from glora.training import predict, step_loss

SPACE = Space(ranks=(4, 2, 1))


def _wrapped():
    model = wrap(make_vit(), SPACE, modules_to_train=("head",))
    for layer in glora_layers(model).values():  # non-zero down factors: every path has an effect and a gradient
        for p in layer.support_parameters():
            torch.nn.init.normal_(p, std=0.05)
    return model


def _params(model, layers) -> int:
    return Layout(dict(layers), "m", SPACE, SPACE.target_layers(model)).trainable_params


def test_uniform_rule_is_the_loops_own_default():
    assert step_plan(_wrapped(), SamplingConfig(), seed=0) is None


def test_budget_rule_trains_one_layout_in_the_band_drawn_from_the_step():
    model = _wrapped()
    plan = step_plan(model, SamplingConfig(rule="budget", budgets=[2000, 6000], band=0.1), seed=3)
    seen = set()
    for step in range(12):
        (member,) = plan(step)
        params = _params(model, member.layers)
        assert 1800 <= params <= 2000 or 5400 <= params <= 6000, params
        seen.add(params > 3000)
        assert plan(step)[0].layers == member.layers  # a function of (seed, step): resume and ranks agree
    assert seen == {True, False}  # both budgets are drawn
    other = step_plan(model, SamplingConfig(rule="budget", budgets=[2000, 6000]), seed=4)
    assert any(other(s)[0].layers != plan(s)[0].layers for s in range(5))


def test_sandwich_members_are_the_largest_the_smallest_and_randoms():
    model = _wrapped()
    template = Layout.sample(model, SPACE, seed=0)
    most = LayoutOps(template, Budget(10**9)).most
    plan = step_plan(model, SamplingConfig(rule="sandwich", randoms=3, distill=True), seed=0)
    members = plan(5)
    assert [m.role for m in members] == ["largest", "smallest", "random", "random", "random"]
    assert _params(model, members[0].layers) == most and _params(model, members[1].layers) == 0
    assert members[0].teacher and not members[0].distill and all(m.distill for m in members[1:])
    assert all(m.layers is None for m in members[2:])  # no budgets: the sampler's uniform per-layer draws
    banded = step_plan(model, SamplingConfig(rule="sandwich", randoms=2, budgets=[3000]), seed=0)(0)
    assert all(2700 <= _params(model, m.layers) <= 3000 for m in banded[2:])


def test_extreme_layouts_respect_layers_without_a_bias():
    model = wrap(make_vit(qkv_bias=False), SPACE)
    largest = extreme_layers(model, largest=True)
    for name, choice in largest.items():
        if name.endswith("qkv"):
            assert [str(o) for o in choice[2:]] == ["none", "none", "none"]  # C, D, E: none without a bias
        assert str(choice[0]) == "LoRA_4" and str(choice[1]) == "LoRA_4"


def _grads(model, images, labels, members):
    model.zero_grad()
    loss, _ = step_loss(model, images, labels, SupernetSteps(lambda step: members), 0, seed=7, label_smoothing=0.0, device=torch.device("cpu"))
    loss.backward()
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_a_planned_step_trains_exactly_its_layouts_and_averages_their_losses(images):
    model = _wrapped()
    labels = torch.tensor([0, 1, 2])
    e_only = Layout.uniform(model, SPACE, E="vector")
    a_only = Layout.uniform(model, SPACE, A="vector")
    members = [StepLayout(e_only.layers), StepLayout(a_only.layers)]
    loss, grads = _grads(model, images, labels, members)
    trained = {n.rsplit(".", 1)[-1] for n, g in grads.items() if g.abs().sum() > 0 and "head" not in n}
    assert trained == {"E", "Ad"}  # A vector uses Ad's first column; nothing else moves
    want = 0.0
    for layout in (e_only, a_only):  # the mean of the two layouts' cross-entropies, computed directly
        set_layout(model, layout)
        want += F.cross_entropy(model(images), labels).item() / 2
    set_layout(model, None)
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert all(layer.choice is None for layer in glora_layers(model).values())  # back in supernet mode


def test_a_distilling_layout_learns_the_teachers_predictions_not_the_labels(images):
    model = _wrapped()
    teacher = StepLayout(Layout.uniform(model, SPACE, A="vector").layers, teacher=True)
    student = Layout.uniform(model, SPACE, E="vector")
    grads = []
    for labels in (torch.tensor([0, 1, 2]), torch.tensor([4, 4, 3])):
        for distill in (True, False):
            _, g = _grads(model, images, labels, [teacher, StepLayout(student.layers, distill=distill)])
            grads.append(torch.cat([v.flatten() for n, v in g.items() if n.endswith(".E")]))
    distilled_a, plain_a, distilled_b, plain_b = grads
    assert torch.equal(distilled_a, distilled_b)  # E is the student's alone: with distillation the labels do not reach it
    assert not torch.allclose(plain_a, plain_b)
    set_layout(model, teacher_layout := Layout.uniform(model, SPACE, A="vector"))
    with torch.no_grad():
        soft = model(images).softmax(-1)
    set_layout(model, student)
    want = F.cross_entropy(model(images), soft)
    set_layout(model, None)
    loss, _ = _grads(model, images, torch.tensor([0, 1, 2]), [StepLayout(student.layers, distill=True), teacher, StepLayout(student.layers, distill=True)])
    first = F.cross_entropy(_forward(model, student, images), torch.tensor([0, 1, 2]))  # before any teacher: the labels
    teacher_loss = F.cross_entropy(_forward(model, teacher_layout, images), torch.tensor([0, 1, 2]))
    assert loss.item() == pytest.approx((first.item() + teacher_loss.item() + want.item()) / 3, rel=1e-5)


def _forward(model, layout, images):
    set_layout(model, layout)
    out = model(images)
    set_layout(model, None)
    return out


@pytest.mark.parametrize("fields, field", [
    (dict(rule="greedy"), "sampling.rule"),
    (dict(rule="budget"), "sampling.budgets"),
    (dict(rule="budget", budgets=[float("inf")]), "sampling.budgets[0]"),
    (dict(band=1.5), "sampling.band"),
    (dict(randoms=-1), "sampling.randoms"),
    (dict(distill=True), "sampling.distill"),
])
def test_bad_sampling_settings_name_the_field(fields, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        SamplingConfig(**fields)



def test_the_evaluator_scores_accuracy_and_loss_of_the_layout_as_a_direct_forward(images):
    from glora.search import Evaluator

    model = _wrapped()
    labels = torch.tensor([0, 1, 2])
    layout = Layout.uniform(model, SPACE, A="vector", E="vector")
    got = Evaluator(model, [(images, labels)], torch.device("cpu"), predict).scores(layout)
    with torch.no_grad():
        logits = _forward(model, layout, images)
    assert got["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert got["acc"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item())
