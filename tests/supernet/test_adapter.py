"""The adapter file: only the layout's slices and the head, loaded onto a fresh backbone it
gives the same logits and the same merged weights; any mismatch is one clear error."""
import json

import pytest
import timm
import torch
from conftest import job_config, make_vit
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from glora.backbones import create_model
from glora.run.checkpoint import tensors_digest
from glora.run.errors import CheckpointError
from glora.spaces import Layout, LayoutError, Space, model_name, parse_option
from glora.stages.retrain import retrain_merge_export as retrain
from glora.stages.setup import wrapped_backbone
from glora.supernet import adapter_state, glora_layers, is_wrapped, load_adapter, merge, save_adapter, set_layout, support_parameters, vector_b_of, wrap
from glora.supernet.adapter import backbone_digest

#: Per layer kind, one A–E row; together every form of every support tensor appears.
MIXED = {
    "attn.qkv": ("LoRA_8", "vector", "LoRA_4", "constant", "vector"),
    "attn.proj": ("vector", "LoRA_4", "vector", "vector", "constant"),
    "mlp.fc1": ("constant", "constant", "none", "none", "none"),
    "mlp.fc2": ("none", "LoRA_8", "LoRA_8", "constant", "vector"),
}


def mixed_layout(model, space):
    layers = {name: tuple(parse_option(o) for o in MIXED[name.split(".", 2)[2]]) for name in space.target_layers(model)}
    return Layout(layers, model_name(model), space)


def randomise(model, seed):
    """Every entry of every support tensor (used or not) and the head, away from zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in [*support_parameters(model), *model.get_classifier().parameters()]:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def make_trained(tmp_path, vector_b="mean"):
    """A wrapped tiny ViT with the mixed layout, random support tensors and head, saved."""
    space = Space.preset("large")
    model = wrap(make_vit(), space, modules_to_train=("head",), vector_b=vector_b)
    layout = set_layout(model, mixed_layout(model, space))
    randomise(model, seed=3)
    path = save_adapter(tmp_path / "adapter.safetensors", model, layout, {"num_classes": 5})
    return model, layout, path


@pytest.fixture
def trained(tmp_path):
    return make_trained(tmp_path)


def fresh_vit(**overrides):
    """The same backbone (make_vit seeds it) with another random head."""
    model = make_vit(**overrides)
    torch.manual_seed(123)
    model.reset_classifier(model.num_classes)
    return model


@pytest.mark.parametrize("vector_b, onto", [("mean", "plain"), ("sum", "plain"), ("sum", "wrapped")])
def test_round_trip_gives_the_same_logits_and_the_same_merged_model(tmp_path, images, vector_b, onto):
    model, layout, path = make_trained(tmp_path, vector_b)
    fresh = fresh_vit()
    if onto == "wrapped":
        fresh = wrap(fresh, Space.preset("large"), modules_to_train=("head",), vector_b=vector_b)
    assert not torch.equal(fresh.head.weight, model.head.weight)
    loaded = load_adapter(fresh, path, expect={"num_classes": 5})
    assert vector_b_of(fresh) == vector_b  # wrapped with the adapter's vector_b (sum: B's row acts on Σx)
    assert loaded.hash == layout.hash and loaded.trainable_params == layout.trainable_params
    assert {n: layer.choice for n, layer in glora_layers(fresh).items()} == layout.layers
    assert sum(int(p.count_nonzero()) for p in support_parameters(fresh)) == layout.trainable_params  # the rest zero
    with torch.no_grad():
        assert (fresh(images) - model(images)).abs().max().item() <= 1e-6
    merged, merged_fresh = merge(model).state_dict(), merge(fresh).state_dict()
    assert merged.keys() == merged_fresh.keys()
    for key in merged:
        assert torch.equal(merged[key], merged_fresh[key]), key


def test_the_file_holds_only_the_chosen_slices(trained):
    model, layout, path = trained
    tensors = load_file(path)
    head = sum(p.numel() for p in model.get_classifier().parameters())
    assert sum(t.numel() for t in tensors.values()) == layout.trainable_params + head
    assert tensors.keys() == adapter_state(model).keys()
    qkv, proj, fc1, fc2 = "blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    assert shapes[f"{qkv}.Ad"] == (144, 8) and shapes[f"{qkv}.Au"] == (8, 48)  # LoRA_8
    assert shapes[f"{qkv}.Bd"] == (144, 1) and f"{qkv}.Bu" not in shapes  # vector
    assert shapes[f"{qkv}.Cd"] == (48, 4) and shapes[f"{qkv}.Cu"] == (4, 1)  # C LoRA_4
    assert shapes[f"{qkv}.D"] == (1,) and shapes[f"{qkv}.E"] == (144,)  # constant, vector
    assert shapes[f"{fc1}.Ad"] == (1, 1) and shapes[f"{fc1}.Bd"] == (1, 1)  # constants
    assert not {f"{fc1}.{p}" for p in ("Cd", "Cu", "D", "E")} & set(shapes)  # none
    assert shapes[f"{proj}.Cd"] == (48, 1) and f"{fc2}.Ad" not in shapes
    assert torch.equal(tensors[f"{qkv}.Bd"], glora_layers(model)[qkv].Bd[:, :1])
    assert shapes["head.weight"] == (5, 48) and shapes["head.bias"] == (5,)
    with safe_open(str(path), framework="pt") as handle:
        identity = json.loads(handle.metadata()["glora"])
    assert identity["format"] == "glora-adapter/1" and identity["model"] == "vit_tiny_patch16_224"
    assert identity["layout_hash"] == layout.hash and Layout.from_dict(identity["layout"]).hash == layout.hash
    assert identity["vector_b"] == "mean" and identity["parameterisation"] == "glora-param/2 vector_b=mean"
    assert identity["num_classes"] == 5


def rewrite(path, out, edit_tensors=None, edit_identity=None):
    """A copy of the adapter with edited tensors / header and a matching checksum (a file
    made by hand or by another version, not a corrupt one)."""
    with safe_open(str(path), framework="pt") as handle:
        identity = json.loads(handle.metadata()["glora"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    if edit_tensors:
        edit_tensors(tensors)
    if edit_identity:
        edit_identity(identity)
    save_file(tensors, str(out), metadata={"glora": json.dumps(identity), "sha256": tensors_digest(tensors)})
    return out


def _wrapped_mid():
    return wrap(fresh_vit(), Space.preset("mid"))


def _other_space(identity):
    identity["layout"]["space"]["targets"] = r".*attn\.qkv"


@pytest.mark.parametrize("what, model, edit_tensors, edit_identity, message", [
    ("another model", lambda: create_model("vit_small_patch16_224", 5, img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3),
     None, None, r"is for model 'vit_tiny_patch16_224' but this model is 'vit_small_patch16_224'; build the backbone it was trained on"),
    ("deeper backbone", lambda: fresh_vit(depth=3), None, None,
     r"layout has no entry for layer 'blocks.2.attn.qkv'.*build the backbone the adapter was trained on"),
    ("shallower backbone", lambda: fresh_vit(depth=1), None, None,
     r"layout has layer 'blocks.1.attn.qkv' that this model does not target"),
    ("wrapped under another space", _wrapped_mid, None, None,
     r"was trained under space .*'ranks': \[8, 4\].* but the model is wrapped under .*'ranks': \[4, 2\].*pass the plain backbone"),
    ("layout of another space", fresh_vit, None, _other_space,
     r"layout has layer 'blocks.0.attn.proj' that this model does not target"),
    ("missing tensor", fresh_vit, lambda t: t.pop("blocks.1.mlp.fc2.Bu"), None,
     r"lacks tensor 'blocks.1.mlp.fc2.Bu' that its layout \w+ needs \(1 missing\)"),
    ("extra tensor", fresh_vit, lambda t: t.update({"blocks.0.mlp.fc1.Au": torch.zeros(1, 48)}), None,
     r"has tensor 'blocks.0.mlp.fc1.Au' that its layout \w+ does not use"),
    ("wrong shape", fresh_vit, lambda t: t.update({"blocks.0.attn.qkv.Ad": torch.zeros(144, 4)}), None,
     r"tensor 'blocks.0.attn.qkv.Ad' has shape \(144, 4\) but this model needs \(144, 8\)"),
    ("another head size", lambda: fresh_vit(num_classes=7), None, None,
     r"tensor 'head.weight' has shape \(5, 48\) but this model needs \(7, 48\); build the backbone \(and num_classes\)"),
    ("edited layout", fresh_vit, None, lambda i: i["layout"]["layers"]["blocks.0.mlp.fc1"].update(A="vector"),
     r"does not hash to the recorded"),
    ("another expected identity", fresh_vit, None, lambda i: i.update(num_classes=7),
     r"was saved with num_classes=7, but num_classes=5 is expected"),
    ("no vector_b (made before it existed)", fresh_vit, None, lambda i: i.pop("vector_b"),
     r"records no usable glora.vector_b \(None; one of \['mean', 'sum'\] expected\).*re-export it with glora-retrain"),
    ("another parameterisation", fresh_vit, None, lambda i: i.update(parameterisation="glora-param/1"),
     r"has parameterisation 'glora-param/1', this version reads 'glora-param/2 vector_b=mean'"),
    ("wrapped with another vector_b", lambda: wrap(fresh_vit(), Space.preset("large"), vector_b="sum"), None, None,
     r"was trained with glora.vector_b=mean, but the model is wrapped with vector_b=sum; pass the plain backbone"),
])
def test_every_mismatch_is_one_clear_error(trained, tmp_path, what, model, edit_tensors, edit_identity, message):
    _, _, path = trained
    if edit_tensors or edit_identity:
        path = rewrite(path, tmp_path / "edited.safetensors", edit_tensors, edit_identity)
    target = model()
    wrapped_before = is_wrapped(target)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=message):
        load_adapter(target, path, expect={"num_classes": 5})
    assert is_wrapped(target) == wrapped_before, f"{what}: the model changed before the error"
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items()), what


def test_bad_files(trained, tmp_path):
    model, _, path = trained
    with pytest.raises(CheckpointError, match="does not exist; glora-retrain writes adapter.safetensors"):
        load_adapter(fresh_vit(), tmp_path / "nope.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one bit of the last tensor
    corrupt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is corrupt: its tensors do not match the checksum"):
        load_adapter(fresh_vit(), corrupt)
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_adapter(fresh_vit(), corrupt)
    weights = tmp_path / "weights.safetensors"
    save_file({"x": torch.zeros(1)}, str(weights), metadata={"glora": json.dumps({"model": "vit_tiny_patch16_224"})})
    with pytest.raises(CheckpointError, match="is not a GLoRA adapter"):
        load_adapter(fresh_vit(), weights)
    with pytest.raises(ValueError, match=r"extra_identity may not set \['vector_b'\]: save_adapter writes them itself"):
        save_adapter(tmp_path / "x.safetensors", model, set_layout(model, mixed_layout(model, Space.preset("large"))), {"vector_b": "sum"})
    other = Layout.uniform(model, Space.preset("large"), A="vector")
    with pytest.raises(LayoutError, match="runs another choice than the layout given"):
        save_adapter(tmp_path / "x.safetensors", model, other)


@pytest.mark.slow
def test_retrain_writes_an_adapter_that_rebuilds_the_export(cache_dir, tmp_path, images):
    cfg = job_config("retrain", cache_dir)
    space = Space.preset("large")
    model, spec, _ = wrapped_backbone(cfg, space)
    Layout.uniform(model, space, A="LoRA_4", B="vector", C="vector", D="constant", E="vector").save(tmp_path / "layout.json")
    run = tmp_path / "run"
    metrics = retrain(job_config("retrain", cache_dir, f"layout={tmp_path / 'layout.json'}"), run)
    adapter, exported = run / "adapter.safetensors", run / "model.safetensors"
    assert metrics["adapter_bytes"] == adapter.stat().st_size == json.loads((run / "metrics.json").read_text())["adapter_bytes"]
    assert adapter.stat().st_size * 5 < exported.stat().st_size, (adapter.stat().st_size, exported.stat().st_size)
    print(f"adapter {adapter.stat().st_size} B vs model {exported.stat().st_size} B")

    fresh, _, _ = wrapped_backbone(cfg, space)  # the pretrained backbone again, head at its init
    layout = load_adapter(fresh, adapter, expect={"num_classes": fresh.num_classes, "kwargs": spec.kwargs})
    assert layout.hash == metrics["layout_hash"]
    x = torch.nn.functional.interpolate(images, size=spec.preprocess.img_size)
    spec_json = json.loads((run / "model.json").read_text())
    plain = timm.create_model(spec_json["name"], pretrained=False, num_classes=spec_json["num_classes"], **spec_json["kwargs"]).eval()
    plain.load_state_dict(load_file(exported), strict=True)
    with torch.no_grad():
        unmerged = fresh.eval()(x)
        merged = merge(fresh)
        assert (merged(x) - plain(x)).abs().max().item() <= 1e-5
        assert (unmerged - plain(x)).abs().max().item() <= 1e-4
    state = merged.state_dict()
    assert state.keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.allclose(state[key], value, atol=1e-6, rtol=0), key


def test_backbone_digest_is_the_frozen_backbone_alone(trained):
    model, _, _ = trained
    plain = fresh_vit()
    assert backbone_digest(plain) == backbone_digest(model)  # wrapped or not; head and support tensors left out
    wrapped = wrap(fresh_vit(), Space.preset("mid"))
    assert backbone_digest(wrapped) == backbone_digest(plain)
    with torch.no_grad():
        plain.blocks[0].attn.qkv.weight[0, 0] += 1e-3
    assert backbone_digest(plain) != backbone_digest(model)


def test_an_adapter_refuses_another_backbone_of_the_same_shape(trained, caplog):
    _, layout, path = trained
    other = make_vit()
    torch.manual_seed(9)
    other.blocks[1].mlp.fc1.reset_parameters()  # the same shapes, other weights
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"adapter was trained on another backbone \(digest [0-9a-f]{12}…\), this backbone is "
                                              r"[0-9a-f]{12}…; load it onto the backbone it was trained on, or pass check_backbone=False"):
        load_adapter(other, path)
    assert not is_wrapped(other) and all(torch.equal(v, before[k]) for k, v in other.state_dict().items())
    assert load_adapter(other, path, check_backbone=False).hash == layout.hash


def test_an_adapter_written_before_the_backbone_digest_loads_with_a_warning(trained, tmp_path, caplog):
    _, layout, path = trained
    old = rewrite(path, tmp_path / "old.safetensors", edit_identity=lambda i: i.pop("backbone_digest"))
    with caplog.at_level("WARNING", logger="glora.supernet.adapter"):
        assert load_adapter(fresh_vit(), old).hash == layout.hash
    assert "records no backbone digest" in caplog.text


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_an_adapter_with_non_finite_tensors_is_refused(trained, tmp_path, bad):
    _, _, path = trained
    edited = rewrite(path, tmp_path / "nan.safetensors", lambda t: t["blocks.0.attn.qkv.E"].__setitem__(3, bad))  # checksum recomputed
    with pytest.raises(CheckpointError, match=r"tensor 'blocks.0.attn.qkv.E' holds NaN or inf"):
        load_adapter(fresh_vit(), edited)


@pytest.mark.parametrize("header, message", [
    ("{not json", r"its 'glora' header is not JSON .*; re-export it"),
    ("[1, 2]", r"its 'glora' header is JSON but not an object \(list\); re-export it"),
    ('{"format": "glora-adapter/1", "model": "a", "model": "b"}', r"its 'glora' header has key 'model' twice; re-export it"),
])
def test_an_adapter_header_that_is_not_one_json_object_is_refused(tmp_path, header, message):
    file = tmp_path / "adapter.safetensors"
    save_file({"x": torch.zeros(1)}, str(file), metadata={"glora": header, "sha256": tensors_digest({"x": torch.zeros(1)})})
    with pytest.raises(CheckpointError, match=rf"adapter '{file}': {message}"):
        load_adapter(fresh_vit(), file)


@pytest.mark.parametrize("key, value, message", [
    ("model", ["vit"], r"header field 'model' is \['vit'\], expected a model name"),
    ("layout", "{}", r"header field 'layout' is '\{\}', expected a layout object"),
    ("layout_hash", 5, r"header field 'layout_hash' is 5, expected a string"),
    ("vector_b", ["mean"], r"header field 'vector_b' is \['mean'\], expected a string"),
    ("parameterisation", 2, r"header field 'parameterisation' is 2, expected a string"),
    ("num_classes", "5", r"header field 'num_classes' is '5', expected a whole number ≥ 1"),
    ("num_classes", True, r"header field 'num_classes' is True, expected a whole number ≥ 1"),
    ("backbone_digest", 7, r"header field 'backbone_digest' is 7, expected a sha256 hex string"),
])
def test_adapter_header_fields_are_typed(trained, tmp_path, key, value, message):
    _, _, path = trained
    edited = rewrite(path, tmp_path / "typed.safetensors", edit_identity=lambda i: i.update({key: value}))
    with pytest.raises(CheckpointError, match=rf"adapter '{edited}': {message}; re-export it"):
        load_adapter(fresh_vit(), edited)


@pytest.mark.parametrize("ranks, message", [
    ([4096, 8, 4], r"space.ranks=\[4096, 8, 4\]: rank 4096 is wider than layer 'blocks.0.attn.qkv' \(144×48\)"),
    ([1e9, 8, 4], r"field 'space': space.ranks=\[1000000000.0, 8, 4\] must be a JSON list of whole numbers ≥ 1"),
])
def test_an_adapter_headers_ranks_are_checked_before_any_tensor_is_built(trained, tmp_path, ranks, message):
    _, _, path = trained
    edited = rewrite(path, tmp_path / "wide.safetensors", edit_identity=lambda i: i["layout"]["space"].update(ranks=ranks))
    target = fresh_vit()
    with pytest.raises(CheckpointError, match=rf"adapter '{edited}'.*{message}"):
        load_adapter(target, edited)
    assert not is_wrapped(target)
