"""Whole-model behaviour: exact start, exact merge, plain timm export, parameter counts."""
import pytest
import timm
import torch
from conftest import TINY_VIT, make_vit

from glora.spaces import Layout, LayoutError, Space
from glora.supernet import GLoRALinear, glora_layers, merge, merged_inference, reseed, set_layout, support_parameters, wrap

SWIN = dict(img_size=32, patch_size=2, window_size=4, embed_dim=24, depths=(1, 1), num_heads=(2, 4), num_classes=5)
MODELS = {
    "vit": ("vit_tiny_patch16_224", TINY_VIT),
    "vit_no_qkv_bias": ("vit_tiny_patch16_224", {**TINY_VIT, "qkv_bias": False}),
    "swin": ("swin_tiny_patch4_window7_224", SWIN),
}


def build(kind):
    name, kwargs = MODELS[kind]
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kwargs).eval(), name, kwargs


def perturb(model, seed=0, std=0.02):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in support_parameters(model):
            p.copy_(torch.randn(p.shape, generator=gen) * std)


@pytest.mark.parametrize("kind", list(MODELS))
def test_fresh_wrap_gives_exactly_the_pretrained_output(kind, images):
    model, _, _ = build(kind)
    with torch.no_grad():
        pretrained = model(images)
    space = Space.preset("large")
    wrap(model, space)
    layouts = [Layout.sample(model, space, seed=s) for s in range(8)]
    layouts += [Layout.uniform(model, space, A=a, B=a) for a in ("LoRA_8", "vector", "constant")]
    with torch.no_grad():
        for layout in layouts:
            set_layout(model, layout)
            assert torch.equal(model(images), pretrained), layout.hash
        set_layout(model, None)
        assert torch.equal(model(images), pretrained)


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_equals_unmerged_and_exports_plain_timm(kind, seed, images):
    model, name, kwargs = build(kind)
    classes = {n: type(m) for n, m in model.named_modules()}
    space = Space.preset("large")
    wrap(model, space)
    set_layout(model, Layout.sample(model, space, seed=seed))
    perturb(model, seed)
    with torch.no_grad():
        unmerged = model(images)
        merged_model = merge(model)
        merged = merged_model(images)
    assert (merged - unmerged).abs().max().item() <= 1e-5
    assert not glora_layers(merged_model)
    assert {n: type(m) for n, m in merged_model.named_modules()} == classes
    fresh = timm.create_model(name, pretrained=False, **kwargs).eval()
    fresh.load_state_dict(merged_model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(images), merged)


@pytest.mark.parametrize("kind", ["vit", "vit_no_qkv_bias"])
@pytest.mark.parametrize("seed", range(4))
def test_trainable_params_equals_elements_that_get_gradient(kind, seed, images):
    model, _, _ = build(kind)
    with torch.no_grad():  # timm zero-initialises biases; a pretrained model's are not zero
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
    space = Space.preset("large")
    wrap(model, space)
    perturb(model, seed + 10, std=0.05)  # non-zero everywhere, so every used element gets gradient
    layout = set_layout(model, Layout.sample(model, space, seed=seed))
    # A random projection of every GLoRA layer's own output joins the loss: some elements
    # get exactly zero gradient through the network alone (softmax ignores a key bias).
    gen = torch.Generator().manual_seed(seed)
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o)) for m in glora_layers(model).values()]
    loss = model(images).square().sum()
    loss = loss + sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outputs)
    loss.backward()
    for hook in hooks:
        hook.remove()
    received = sum(int((p.grad != 0).sum()) for p in support_parameters(model) if p.grad is not None)
    assert received == layout.trainable_params
    assert received > 0


def test_only_support_tensors_and_chosen_modules_train():
    model = wrap(make_vit(), Space.preset("small"), modules_to_train=("head",))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    support = {n for n, p in model.named_parameters() if n.split(".")[-1] in {"Ad", "Au", "Bd", "Bu", "Cd", "Cu", "D", "E"}}
    assert trainable == support | {"head.weight", "head.bias"}
    assert all(isinstance(m, GLoRALinear) for m in glora_layers(model).values()) and len(glora_layers(model)) == 8


def test_supernet_mode_is_reproducible_and_varies(images):
    model = wrap(make_vit(), Space.preset("large"), seed=0)
    perturb(model)
    with torch.no_grad():
        reseed(model, 5)
        a = model(images)
        b = model(images)
        reseed(model, 5)
        c = model(images)
    assert torch.equal(a, c) and not torch.equal(a, b)


def test_misuse_gets_clear_errors():
    model = make_vit()
    with pytest.raises(LayoutError, match="not wrapped with GLoRA"):
        set_layout(model, None)
    wrap(model, Space.preset("large"))
    with pytest.raises(ValueError, match="already wrapped"):
        wrap(model, Space.preset("large"))
    with pytest.raises(RuntimeError, match="merge needs a fixed layout"):
        merge(model)
    assert glora_layers(model)  # nothing was unloaded by the failed merge


def test_merged_inference_equals_unmerged_and_restores(images):
    model = wrap(make_vit(), Space.preset("large"))
    perturb(model)
    set_layout(model, Layout.sample(model, Space.preset("large"), seed=3))
    with torch.no_grad():
        unmerged = model(images)
        with merged_inference(model):
            merged = model(images)
        after = model(images)
    assert (merged - unmerged).abs().max().item() <= 1e-5
    assert torch.equal(after, unmerged) and all(m.merged is None for m in glora_layers(model).values())
    set_layout(model, None)
    with pytest.raises(RuntimeError, match="needs a fixed layout"):
        with merged_inference(model):
            pass
