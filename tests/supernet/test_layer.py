"""GLoRALinear against the naive formula, computed directly in float64."""
import itertools

import pytest
import torch
from torch import nn

from glora.spaces import LayerShape, Option, Space
from glora.supernet import ChoiceSampler, GLoRALinear

OUT, IN = 24, 16


def full(option: Option, down: torch.Tensor, up: torch.Tensor | None, shape) -> torch.Tensor:
    """A or B (out×in), C (in) written out in full, independently of the layer code."""
    if option.kind == "none":
        return torch.zeros(shape, dtype=torch.float64)
    if option.kind == "constant":
        return torch.full(shape, down[0, 0].item(), dtype=torch.float64)
    if option.kind == "vector":
        column = down[:, 0].double()
        return column[:, None].expand(shape).clone() if len(shape) == 2 else column.clone()
    return (down[:, : option.rank].double() @ up[: option.rank].double()).reshape(shape)


def naive(layer: GLoRALinear, x: torch.Tensor, choice, vector_b: str = "mean") -> torch.Tensor:
    a, b, c, d, e = choice
    w0 = layer.weight.double()
    A = full(a, layer.Ad, layer.Au, (OUT, IN))
    B = full(b, layer.Bd, layer.Bu, (OUT, IN))
    if b.kind in ("vector", "constant") and vector_b == "mean":  # the broadcast row acts on the inputs' mean (W += b 1ᵀ / in)
        B = B / IN
    W = w0 + w0 * A + B
    y = x.double() @ W.T
    if layer.bias is None:
        return y
    b0 = layer.bias.double()
    C = full(c, layer.Cd, layer.Cu, (IN,))
    D = full(d, layer.D[:, None], None, (OUT,)) if d.kind != "constant" else torch.full((OUT,), layer.D[0].item(), dtype=torch.float64)
    E = full(e, layer.E[:, None], None, (OUT,)) if e.kind != "constant" else torch.full((OUT,), layer.E[0].item(), dtype=torch.float64)
    return y + (b0 + b0 * D + E + w0 @ C)


def random_layer(bias: bool, seed: int = 0, vector_b: str = "mean") -> GLoRALinear:
    torch.manual_seed(seed)
    space = Space.preset("large")
    layer = GLoRALinear(nn.Linear(IN, OUT, bias=bias), space.choices(LayerShape(OUT, IN, bias)), space.max_rank, vector_b=vector_b)
    with torch.no_grad():
        for p in layer.support_parameters():
            p.normal_(0.0, 0.5)
    return layer


@pytest.mark.parametrize("vector_b", ["mean", "sum"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_shape", [(5, IN), (2, 7, IN)])
def test_every_choice_equals_the_naive_formula(bias, x_shape, vector_b):
    layer = random_layer(bias, vector_b=vector_b)
    x = torch.randn(x_shape)
    combos = list(itertools.product(*layer.choices))
    assert len(combos) == (5 * 5 * 4 * 3 * 3 if bias else 25)
    for choice in combos:
        got = layer.forward_choice(x, choice).double()
        want = naive(layer, x, choice, vector_b)
        assert got.shape == want.shape
        rel = ((got - want).norm() / want.norm()).item()
        assert rel <= 1e-6, f"{[str(o) for o in choice]}: relative error {rel:.2e}"
        weight, b = layer.merged_weight_and_bias(choice)
        merged = torch.nn.functional.linear(x, weight, b).double()
        assert ((merged - want).norm() / want.norm()).item() <= 1e-6


def test_forward_builds_the_weight_only_for_lora_a(monkeypatch):
    layer = random_layer(True)
    x = torch.randn(4, IN)

    def forbidden(*args, **kwargs):
        raise AssertionError("built the out×in weight")

    monkeypatch.setattr(layer, "merged_weight_and_bias", forbidden)
    monkeypatch.setattr("glora.supernet.layer.lora_a_linear", forbidden)
    for choice in itertools.product(*layer.choices):
        if choice[0].kind == "lora":
            with pytest.raises(AssertionError, match="built the out×in weight"):
                layer.forward_choice(x, choice)
        else:
            y = layer.forward_choice(x, choice)
            if y.requires_grad:
                y.sum().backward()


@pytest.mark.parametrize("bias", [True, False])
def test_gradients_of_every_choice_equal_autograd_through_the_merged_weight(bias):
    """The custom backwards (functional.py: LoRA-A from one weight gradient, vector /
    constant A without tokens×out temporaries) against plain autograd through
    ``merged_weight_and_bias``, for every choice, in float64."""
    torch.manual_seed(0)
    space = Space.preset("large")
    base = nn.Linear(IN, OUT, bias=bias).double()
    layer = GLoRALinear(base, space.choices(LayerShape(OUT, IN, bias)), space.max_rank)
    with torch.no_grad():
        for p in layer.support_parameters():
            p.normal_(0.0, 0.5)
    x = torch.randn(2, 3, IN, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, OUT, dtype=torch.float64)
    params = [x, *layer.support_parameters()]
    checked = 0
    for choice in itertools.product(*layer.choices):
        fused = torch.autograd.grad((layer.forward_choice(x, choice) * g).sum(), params, allow_unused=True, materialize_grads=True)
        weight, b = layer.merged_weight_and_bias(choice)
        plain = torch.autograd.grad((torch.nn.functional.linear(x, weight, b) * g).sum(), params, allow_unused=True, materialize_grads=True)
        for got, want in zip(fused, plain):
            assert torch.allclose(got, want, rtol=1e-10, atol=1e-12), [str(o) for o in choice]
        checked += 1
    assert checked == (5 * 5 * 4 * 3 * 3 if bias else 25)


def test_supernet_mode_draws_a_seeded_choice_per_forward():
    space = Space.preset("large")
    shape = LayerShape(OUT, IN, True)

    def draws(seed, n=30):
        sampler = ChoiceSampler(seed)
        layer = GLoRALinear(nn.Linear(IN, OUT), space.choices(shape), space.max_rank, sampler)
        return [sampler.draw(layer.choices) for _ in range(n)]

    a, b, c = draws(0), draws(0), draws(1)
    assert a == b and a != c
    assert len(set(a)) > 20  # a fresh choice each time
    for tensor, options in zip("ABCDE", space.choices(shape).values()):
        assert {d["ABCDE".index(tensor)] for d in draws(2, 300)} == set(options)
