import pytest
import timm
from conftest import make_vit

from glora.spaces import LayerShape, Option, Space, SpaceError


def test_presets_ranks():
    assert Space.preset("large").ranks == (8, 4)
    assert Space.preset("mid").ranks == (4, 2)
    assert Space.preset("small").ranks == (2,)
    with pytest.raises(SpaceError, match="unknown space preset 'huge'"):
        Space.preset("huge")


def test_default_targets_are_block_linears():
    model = make_vit()
    names = list(Space().target_layers(model))
    expected = [f"blocks.{i}.{s}" for i in range(2) for s in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    assert names == expected


def test_options_per_tensor():
    space = Space.preset("mid")
    shape = LayerShape(6, 4, True)
    assert [str(o) for o in space.options_for("A", shape)] == ["LoRA_4", "LoRA_2", "vector", "constant", "none"]
    assert [str(o) for o in space.options_for("C", shape)] == ["LoRA_4", "LoRA_2", "vector", "none"]
    assert [str(o) for o in space.options_for("E", shape)] == ["vector", "constant", "none"]


def test_layer_without_bias_only_offers_none_for_cde():
    space = Space.preset("large")
    shape = LayerShape(6, 4, False)
    for tensor in "CDE":
        assert space.options_for(tensor, shape) == (Option("none"),)
    assert len(space.options_for("A", shape)) == 5


def test_restricted_options_and_round_trip():
    space = Space(ranks=(2,), options={"A": ("lora", "none"), "D": ("none",)})
    assert [str(o) for o in space.options_for("A", LayerShape(3, 3, True))] == ["LoRA_2", "none"]
    assert Space.from_dict(space.to_dict()) == space
    assert "options" not in Space.preset("large").to_dict()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(options={"C": ("constant",)}), r"space.options.C: \['constant'\] not allowed"),
        (dict(options={"F": ("none",)}), "unknown support tensor 'F'"),
        (dict(targets="blocks.(("), "not a valid regex"),
        (dict(ranks=(0,)), "positive"),
    ],
)
def test_bad_space_is_rejected(kwargs, message):
    with pytest.raises(SpaceError, match=message):
        Space(**kwargs)


def test_targets_that_match_nothing_name_the_layers():
    model = make_vit()
    with pytest.raises(SpaceError, match="matches no nn.Linear"):
        Space(targets=r"nothing\.here").target_layers(model)


def test_non_vit_models():
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, depths=(1, 1, 1, 1))
    names = list(Space().target_layers(swin))
    assert names[:2] == ["layers.0.blocks.0.attn.qkv", "layers.0.blocks.0.attn.proj"]
    assert len(names) == 16
    mixer = timm.create_model("mixer_s16_224", pretrained=False, img_size=64)
    targets = r"blocks\.\d+\.mlp_(tokens|channels)\.fc[12]"
    assert len(Space(targets=targets).target_layers(mixer)) == 4 * 8
