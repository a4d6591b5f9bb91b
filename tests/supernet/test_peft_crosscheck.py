"""Independent cross-check: a uniform layout in our layer equals peft's own GLoRA layer."""
import itertools

import pytest
import torch
from conftest import make_vit

from glora.spaces import DEFAULT_TARGETS, Layout, Space
from glora.supernet import glora_layers, set_layout, wrap

peft = pytest.importorskip("peft")
from peft.tuners.glora.layer import GloraLinear as PeftGloraLinear  # noqa: E402

R = 4


def _copy_path(path, down, up, kind, row_scale=1.0):
    """Our factors into peft's path; ``row_scale``: our vector / constant B act on the
    inputs' mean (peft's on their sum), so peft gets the scaled value."""
    down = down if kind == "lora" else down * row_scale
    if kind == "lora":
        path.Xd.copy_(down[:, :R])
        path.Xu.copy_(up[:R])
    elif kind == "vector":
        path.X.copy_(down[:, :1].reshape(path.X.shape))
    elif kind == "constant":
        path.X.copy_(down.reshape(-1)[:1])


@pytest.mark.parametrize(
    "ab, c, de", list(itertools.product(("lora", "vector", "constant", "none"), ("lora", "vector", "none"), ("vector", "constant", "none")))
)
def test_uniform_layout_matches_peft_glora(ab, c, de, images):
    ours = make_vit()
    theirs = make_vit()
    space = Space(ranks=(R,))
    wrap(ours, space)
    spell = {"lora": f"LoRA_{R}"}
    set_layout(ours, Layout.uniform(ours, space, A=spell.get(ab, ab), B=spell.get(ab, ab), C=spell.get(c, c), D=de, E=de))
    gen = torch.Generator().manual_seed(0)
    config = peft.GloraConfig(r=R, target_modules=DEFAULT_TARGETS, config_A_B=ab, config_C=c, config_D_E=de)
    theirs = peft.get_peft_model(theirs, config)
    peft_layers = {n.removeprefix("base_model.model."): m for n, m in theirs.named_modules() if isinstance(m, PeftGloraLinear)}
    layers = glora_layers(ours)
    assert set(peft_layers) == set(layers)
    with torch.no_grad():
        for name, layer in layers.items():
            for p in layer.support_parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
            other = peft_layers[name]
            _copy_path(other.glora_A["default"], layer.Ad, layer.Au, ab)
            _copy_path(other.glora_B["default"], layer.Bd, layer.Bu, ab, layer.row_scale)
            _copy_path(other.glora_C["default"], layer.Cd, layer.Cu, c)
            for ours_vec, path in ((layer.D, other.glora_D["default"]), (layer.E, other.glora_E["default"])):
                if de != "none":
                    path.X.copy_(ours_vec[:, None][: path.X.numel()].reshape(path.X.shape) if de == "constant" else ours_vec)
        # fp32, layer by layer: the same input through both layers.
        for name, layer in layers.items():
            x = torch.randn(3, 17, layer.in_features, generator=gen)
            want, got = peft_layers[name](x), layer(x)
            assert ((got - want).norm() / want.norm()).item() <= 1e-6, name
        # Whole model in fp64: peft adds and subtracts the base output, which costs it
        # fp32 precision on small logits; in fp64 both sides agree to ~1e-8 (peft's copy of a
        # vector / constant B is our fp32 value times 1/in, rounded once in fp32).
        want = theirs.double()(images.double())
        got = ours.double()(images.double())
    assert ((got - want).norm() / want.norm()).item() <= 2e-8
    if (ab, c, de) != ("none", "none", "none"):
        assert not torch.equal(got, make_vit().double()(images.double()))  # the tensors really did something
