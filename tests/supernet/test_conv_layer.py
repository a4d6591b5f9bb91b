"""GLoRA on 1×1 convolutions: the same maths as on a Linear over channels, checked against
a float64 computation written out per pixel (PEFT has no GLoRA for convolutions to compare
with), plus identity at init, exact merge into the plain conv, the parameter count, and the
refusal of convolutions GLoRA cannot target."""
import itertools

import pytest
import torch
from torch import nn

from glora.spaces import Layout, Space, SpaceError
from glora.supernet import GLoRALinear, glora_layers, merge, merged_inference, set_layout, wrap

OUT, IN = 12, 8


def full(option, down: torch.Tensor, up: torch.Tensor | None, shape) -> torch.Tensor:
    """A, B (out×in), C (in), D, E (out) written out in full, differentiably, in float64."""
    if option.kind == "none":
        return torch.zeros(shape, dtype=torch.float64)
    if option.kind == "constant":
        return down.reshape(-1)[0].double().expand(shape)
    if option.kind == "vector":
        column = down.reshape(down.shape[0], -1)[:, 0].double()
        return column[:, None].expand(shape) if len(shape) == 2 else column
    return (down[:, : option.rank].double() @ up[: option.rank].double()).reshape(shape)


def naive_conv(layer: GLoRALinear, x: torch.Tensor, choice) -> torch.Tensor:
    """y[n, o, h, w] = Σ_i W[o, i] x[n, i, h, w] + b[o], W and b from the GLoRA formula in float64."""
    a, b, c, d, e = choice
    w0 = layer.base_layer.weight.double()[:, :, 0, 0]
    B = full(b, layer.Bd, layer.Bu, (OUT, IN))
    if b.kind in ("vector", "constant"):
        B = B / IN  # vector_b="mean": the broadcast row acts on the channels' mean
    W = w0 + w0 * full(a, layer.Ad, layer.Au, (OUT, IN)) + B
    y = torch.einsum("oi,nihw->nohw", W, x.double())
    if layer.base_layer.bias is None:
        return y
    b0 = layer.base_layer.bias.double()
    C = full(c, layer.Cd, layer.Cu, (IN,))
    D, E = full(d, layer.D, None, (OUT,)), full(e, layer.E, None, (OUT,))
    return y + (b0 + b0 * D + E + w0 @ C)[None, :, None, None]


def conv_layer(bias: bool, seed: int = 0, randomise: bool = True) -> GLoRALinear:
    torch.manual_seed(seed)
    space = Space.preset("large", targets="conv")
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(IN, OUT, 1, bias=bias))
    layer = GLoRALinear(model.conv, space.choices(space.target_layers(model)["conv"]), space.max_rank)
    if randomise:
        with torch.no_grad():
            for p in layer.support_parameters():
                p.normal_(0.0, 0.5)
    return layer


@pytest.mark.parametrize("bias", [True, False])
def test_every_choice_on_a_pointwise_conv_equals_the_per_pixel_formula_and_its_merge(bias):
    layer = conv_layer(bias)
    x = torch.randn(2, IN, 5, 3)
    combos = list(itertools.product(*layer.choices))
    assert len(combos) == (5 * 5 * 4 * 3 * 3 if bias else 25)
    for choice in combos:
        want = naive_conv(layer, x, choice)
        layer.choice = choice
        got = layer(x).double()
        assert got.shape == (2, OUT, 5, 3)
        assert ((got - want).norm() / want.norm()).item() <= 1e-6, [str(o) for o in choice]
        with torch.no_grad():
            layer.merged = layer.merged_weight_and_bias()
            merged = layer(x).double()
            layer.merged = None
        assert ((merged - want).norm() / want.norm()).item() <= 1e-6, [str(o) for o in choice]


def test_gradients_through_the_conv_equal_autograd_through_the_per_pixel_formula():
    layer = conv_layer(True)
    layer.double()
    x = torch.randn(2, IN, 3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, OUT, 3, 4, dtype=torch.float64)
    params = [x, *layer.support_parameters()]
    for choice in itertools.islice(itertools.product(*layer.choices), 0, None, 7):  # every 7th: all kinds of A and B appear
        layer.choice = choice
        fused = torch.autograd.grad((layer(x) * g).sum(), params, allow_unused=True, materialize_grads=True)
        plain = torch.autograd.grad((naive_conv(layer, x, choice) * g).sum(), params, allow_unused=True, materialize_grads=True)
        for got, want in zip(fused, plain):
            assert torch.allclose(got, want, rtol=1e-9, atol=1e-11), [str(o) for o in choice]


class TinyCNN(nn.Module):
    """Stem 3×3, depthwise 3×3, pointwise expand / project (no bias, then BN), a 1×1 with
    bias, a Linear head: the kinds of layer an EfficientNet has."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw_expand = nn.Conv2d(8, 16, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.pw_project = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.pw_project(torch.relu(self.bn(self.pw_expand(self.dw(torch.relu(self.stem(x)))))))
        return self.head(x.mean((2, 3)))


def test_a_cnn_is_identity_at_init_merges_exactly_and_counts_what_trains():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(3, 3, 6, 6)
    before = model(x)
    space = Space.preset("large", targets=r"pw_.*")
    wrap(model, space, seed=0)
    assert sorted(glora_layers(model)) == ["pw_expand", "pw_project"]
    for layout in [Layout.sample(model, space, seed=s) for s in range(6)]:
        bound = set_layout(model, layout)
        assert torch.allclose(model(x), before, atol=1e-6)  # down factors, D and E start at zero
    with torch.no_grad():
        for layer in glora_layers(model).values():
            for p in layer.support_parameters():
                p.normal_(0.0, 0.3)
    model.zero_grad()
    model(x).square().sum().backward()
    touched = sum(int((p.grad != 0).sum()) for layer in glora_layers(model).values() for p in layer.support_parameters() if p.grad is not None)
    assert touched == bound.trainable_params
    unmerged = model(x)
    with merged_inference(model):
        assert torch.allclose(model(x), unmerged, atol=1e-5)
    merge(model)
    assert type(model.pw_expand) is nn.Conv2d and model.pw_expand.weight.shape == (16, 8, 1, 1)
    assert torch.allclose(model(x), unmerged, atol=1e-5)
    plain = TinyCNN().eval()
    plain.load_state_dict(model.state_dict())  # the merged model is the plain architecture
    assert torch.allclose(plain(x), unmerged, atol=1e-5)


@pytest.mark.parametrize("pattern, kind", [("stem", "3x3 Conv2d"), ("dw", "depthwise 3x3 Conv2d")])
def test_a_target_that_is_not_linear_or_pointwise_is_refused_naming_it(pattern, kind):
    with pytest.raises(SpaceError) as err:
        Space.preset("large", targets=pattern).target_layers(TinyCNN())
    message = str(err.value)
    assert "\n" not in message and repr(pattern) in message and kind in message and "1x1" in message


def test_a_strided_pointwise_conv_is_refused():
    model = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2))
    with pytest.raises(SpaceError, match="with stride"):
        Space.preset("large", targets="0").target_layers(model)


def test_training_leaves_the_frozen_batch_norm_statistics_alone_and_merge_restores_plain_modules():
    torch.manual_seed(0)
    model = TinyCNN()
    pretrained = {k: v.clone() for k, v in model.bn.state_dict().items()}
    space = Space.preset("large", targets=r"pw_.*")
    wrap(model, space, modules_to_train=("head",))
    set_layout(model, Layout.sample(model, space, seed=1))
    model.train()
    assert model.training and model.head.training and not model.bn.training
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        optimiser.zero_grad()
        model(torch.randn(4, 3, 6, 6) * 3 + 1).square().mean().backward()
        optimiser.step()
    for key, value in model.bn.state_dict().items():
        assert torch.equal(value, pretrained[key]), key
    merge(model)
    model.train()
    assert model.bn.training  # the exported module is a plain BatchNorm again
