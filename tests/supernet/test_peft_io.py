"""A searched layout as a PEFT GLoRA adapter: PEFT's own loader gives our logits and its
merge our merged weights; a uniform PEFT adapter comes back as a layout with the same
logits; what PEFT cannot compute exactly, or a directory that is not a GLoRA adapter for
this backbone, is one clear error."""
import copy
import json

import pytest
import torch
from conftest import make_vit
from test_adapter import mixed_layout, randomise

from glora.run.errors import CheckpointError
from glora.spaces import Layout, Space
from glora.supernet import PeftExportError, from_peft, merge, peft_forms, save_adapter, set_layout, to_peft, wrap

peft = pytest.importorskip("peft")
from peft import GloraConfig, LoraConfig, PeftModel, get_peft_model  # noqa: E402

X = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def other_head_vit():
    """The same backbone (make_vit seeds it) with another random head: what a user loads onto."""
    model = make_vit()
    torch.manual_seed(99)
    torch.nn.init.normal_(model.head.weight)
    return model.eval()


def trained(layout_of, vector_b="mean", ranks=(8, 4)):
    space = Space(ranks=ranks)
    model = wrap(make_vit(), space, modules_to_train=("head",), vector_b=vector_b)
    layout = set_layout(model, layout_of(model, space))
    randomise(model, seed=3)
    return model.eval(), layout


def assert_peft_equals_ours(model, layout, tmp_path):
    directory = to_peft(model, layout, tmp_path / "peft")
    with torch.no_grad():
        ours = model(X)
        loaded = PeftModel.from_pretrained(other_head_vit(), str(directory)).eval()
        theirs = loaded(X)
        assert (ours - theirs).abs().max().item() <= 1e-5
        merged_ours = merge(copy.deepcopy(model)).state_dict()
        merged_theirs = loaded.merge_and_unload().state_dict()
    assert merged_ours.keys() == merged_theirs.keys()
    worst = max((merged_ours[k] - merged_theirs[k]).abs().max().item() for k in merged_ours)
    assert worst <= 1e-5
    return directory


@pytest.mark.parametrize("vector_b", ["mean", "sum"])
def test_every_form_exports_exactly(vector_b, tmp_path):
    model, layout = trained(mixed_layout, vector_b)
    directory = assert_peft_equals_ours(model, layout, tmp_path)
    config = json.loads((directory / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["config_A_B"], config["config_C"], config["config_D_E"]) == ("GLORA", 8, "lora", "lora", "vector")
    assert config["modules_to_save"] == ["head"] and config["base_model_name_or_path"] == "vit_tiny_patch16_224"
    assert sorted(config["target_modules"]) == sorted(layout.layers)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_layouts_export_exactly(seed, tmp_path):
    model, layout = trained(lambda m, s: Layout.sample(m, s, seed=seed))
    assert_peft_equals_ours(model, layout, tmp_path)


@pytest.mark.parametrize("forms, expected", [
    (dict(A="vector", B="constant", C="vector", D="constant", E="none"), ("vector", "vector", "constant")),
    (dict(A="none", B="none", C="none", D="vector", E="constant"), ("none", "none", "vector")),
    (dict(A="constant", B="none", C="LoRA_2", D="none", E="none"), ("constant", "lora", "none")),
])
def test_the_smallest_peft_form_that_holds_the_layout(forms, expected, tmp_path):
    model, layout = trained(lambda m, s: Layout.uniform(m, s, **forms), ranks=(4, 2))
    found = peft_forms(layout)
    assert (found["config_A_B"], found["config_C"], found["config_D_E"]) == expected
    assert_peft_equals_ours(model, layout, tmp_path)


def test_the_embedded_backbone_exports_exactly(tmp_path):
    """The embedded default's architecture (what experiment=smoke trains) under a sampled layout."""
    from glora.backbones import create_model
    from glora.backbones.embedded import PretrainConfig

    recipe = PretrainConfig()
    space = Space.preset("small")
    torch.manual_seed(0)
    model = wrap(create_model(recipe.name, 4, **recipe.kwargs), space, modules_to_train=("head",))
    layout = set_layout(model, Layout.sample(model, space, seed=5))
    randomise(model, seed=4)
    model.eval()
    directory = to_peft(model, layout, tmp_path / "peft")
    x = torch.randn(3, 3, recipe.kwargs["img_size"], recipe.kwargs["img_size"])
    torch.manual_seed(0)
    plain = create_model(recipe.name, 4, **recipe.kwargs).eval()
    with torch.no_grad():
        assert (model(x) - PeftModel.from_pretrained(plain, str(directory))(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("ab, c, de", [("lora", "lora", "constant"), ("vector", "vector", "vector"), ("constant", "none", "none")])
def test_uniform_peft_adapter_round_trips(ab, c, de, tmp_path):
    """PEFT's own adapter (random, not a no-op) -> our layout and weights -> PEFT again."""
    torch.manual_seed(7)
    config = GloraConfig(r=4, target_modules=r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])", config_A_B=ab, config_C=c, config_D_E=de,
                         modules_to_save=["head"], init_weights=False)
    theirs = get_peft_model(make_vit(), config).eval()
    theirs.save_pretrained(str(tmp_path / "theirs"), save_embedding_layers=False)
    ours = other_head_vit()
    layout = from_peft(ours, tmp_path / "theirs")
    spell = {"lora": "LoRA_4"}
    assert {tuple(map(str, c_)) for c_ in layout.layers.values()} == {(spell.get(ab, ab), spell.get(ab, ab), spell.get(c, c), de, de)}
    with torch.no_grad():
        assert (ours(X) - theirs(X)).abs().max().item() <= 1e-5
    assert_peft_equals_ours(ours.eval(), layout, tmp_path)


def test_pointwise_convs_are_refused(tmp_path):
    from glora.backbones import create_model

    model = create_model("tf_efficientnet_lite0", 3)
    space = Space(ranks=(2,), targets=r"blocks\.\d+\.\d+\.conv_pw")
    wrap(model, space, modules_to_train=("classifier",))
    layout = set_layout(model, Layout.sample(model, space, seed=0))
    with pytest.raises(PeftExportError, match=r"export.peft: layer .blocks\.0\.0\.conv_pw. is a 1x1 Conv2d.*nn\.Linear only"):
        to_peft(model, layout, tmp_path / "peft")
    assert not (tmp_path / "peft").exists()


def test_a_layout_not_set_on_the_model_is_refused(tmp_path):
    model, layout = trained(mixed_layout)
    set_layout(model, Layout.uniform(model, Space(ranks=(8, 4)), A="none", B="none", C="none", D="none", E="none"))
    with pytest.raises(PeftExportError, match="runs another choice.*set_layout"):
        to_peft(model, layout, tmp_path / "peft")


def test_import_refuses_what_is_not_a_glora_adapter_for_this_backbone(tmp_path):
    lora = get_peft_model(make_vit(), LoraConfig(r=2, target_modules=["qkv"]))
    lora.save_pretrained(str(tmp_path / "lora"), save_embedding_layers=False)
    with pytest.raises(CheckpointError, match="PEFT 'LORA' adapter, not GLORA"):
        from_peft(make_vit(), tmp_path / "lora")
    with pytest.raises(CheckpointError, match="holds no adapter_config.json"):
        from_peft(make_vit(), tmp_path / "nowhere")

    model, layout = trained(mixed_layout)
    directory = to_peft(model, layout, tmp_path / "peft")
    config = json.loads((directory / "adapter_config.json").read_text())
    (directory / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "vit_base_patch16_224"}))
    with pytest.raises(CheckpointError, match="for base model 'vit_base_patch16_224'.*pass the backbone"):
        from_peft(make_vit(), directory)
    (directory / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not load onto.*pass the backbone"):
        from_peft(make_vit(embed_dim=60), directory)
    plain = make_vit()
    from_peft(plain, directory)
    with pytest.raises(CheckpointError, match="already wrapped"):
        from_peft(plain, directory)


def test_peft_stores_zero_buffers_that_our_adapter_does_not(tmp_path):
    """What the README's size table reports: a form PEFT spells 'none' keeps an out x in buffer of zeros."""
    model, layout = trained(lambda m, s: Layout.uniform(m, s, A="none", B="none", C="none", D="vector", E="vector"))
    directory = to_peft(model, layout, tmp_path / "peft")
    ours = save_adapter(tmp_path / "adapter.safetensors", model, layout)
    from safetensors import safe_open

    with safe_open(str(directory / "adapter_model.safetensors"), "pt") as handle:
        zeros = [k for k in handle.keys() if k.endswith(".zeros")]
        assert zeros and all(not handle.get_tensor(k).any() for k in zeros)
    assert (directory / "adapter_model.safetensors").stat().st_size > 10 * ours.stat().st_size
