import pytest
import timm
from conftest import make_vit

from glora.spaces import LayerShape, Option, Space, SpaceError
from glora.supernet import is_wrapped, wrap


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


@pytest.mark.parametrize(
    "data, message",
    [
        ({"ranks": [1e9]}, r"space.ranks=\[1000000000.0\] must be a JSON list of whole numbers ≥ 1"),
        ({"ranks": [0]}, r"space.ranks=\[0\] must be a JSON list of whole numbers ≥ 1"),
        ({"ranks": [-1]}, r"space.ranks=\[-1\]"),
        ({"ranks": [2.5]}, r"space.ranks=\[2.5\]"),
        ({"ranks": ["8"]}, r"space.ranks=\['8'\]"),
        ({"ranks": [True]}, r"space.ranks=\[True\]"),
        ({"ranks": "8421"}, r"space.ranks='8421' must be a JSON list"),
        ({"ranks": 8}, r"space.ranks=8 must be a JSON list"),
        ({"options": {"A": "lora"}}, r"space.options.A='lora' must be a JSON list of kinds"),
        ({"options": {"A": [1]}}, r"space.options.A=\[1\] must be a JSON list of kinds"),
        ({"options": ["lora"]}, r"space.options=\['lora'\] must be an object"),
        ({"targets": 3}, r"space.targets=3 must be a regex string"),
        ([8, 4], r"space must be an object"),
    ],
)
def test_space_read_from_a_file_takes_only_json_lists_of_ints(data, message):
    with pytest.raises(SpaceError, match=message):
        Space.from_dict(data)


def test_a_rank_wider_than_a_targeted_layer_is_refused_before_any_tensor_is_built():
    model = make_vit()  # every targeted layer is at least 48 wide (qkv 144×48, fc2 48×192)
    assert len(Space(ranks=(48,)).target_layers(model)) == 8
    space = Space.from_dict({"ranks": [4096, 8]}, source="runs/x/layout.json")
    with pytest.raises(SpaceError, match=r"runs/x/layout.json: space.ranks=\[4096, 8\]: rank 4096 is wider than layer "
                                         r"'blocks.0.attn.qkv' \(144×48\), the narrowest targeted layer; use ranks ≤ 48"):
        space.target_layers(model)
    with pytest.raises(SpaceError, match="rank 4096 is wider than"):
        wrap(model, space)
    assert not is_wrapped(model) and not any(n.endswith(".base_layer.weight") for n, _ in model.named_parameters())
