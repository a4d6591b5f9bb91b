import json
import pickle

import pytest
from conftest import make_vit

from glora.spaces import FORMAT, Layout, LayoutError, Space, SpaceError, TunedLr
from glora.supernet import set_layout, wrap


@pytest.fixture
def wrapped():
    space = Space.preset("large")
    return wrap(make_vit(), space), space


def test_same_seed_same_layout(wrapped):
    model, space = wrapped
    a, b, c = (Layout.sample(model, space, seed=s) for s in (3, 3, 4))
    assert a.layers == b.layers and a.hash == b.hash
    assert a.layers != c.layers and a.hash != c.hash


def test_json_round_trip_is_exact(wrapped, tmp_path):
    model, space = wrapped
    layout = Layout.sample(model, space, seed=0)
    layout.budget, layout.metrics = 10_000, {"val_acc": 0.5}
    path = layout.save(tmp_path / "best.json")
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["model"] == "vit_tiny_patch16_224"
    assert data["space"] == {"ranks": [8, 4], "targets": space.targets}
    loaded = Layout.load(path)
    assert loaded.layers == layout.layers and loaded.hash == layout.hash
    assert loaded.trainable_params == layout.trainable_params  # from the file, before binding
    bound = set_layout(model, loaded)
    assert bound.trainable_params == layout.trainable_params
    assert bound.to_dict() == layout.to_dict()


def test_tuned_lr_is_a_typed_field_the_hash_ignores(wrapped, tmp_path):
    """The search hands the retraining its lr choice as ``tuned_lr``: it survives the JSON,
    leaves the layout's id alone, and older files' metrics keys read as the same field."""
    model, space = wrapped
    layout = Layout.sample(model, space, seed=0)
    layout.tuned_lr = TunedLr(3e-3, (1e-3, 3e-3, 1e-2), 0.75)
    loaded = Layout.load(layout.save(tmp_path / "tuned.json"))
    assert loaded.tuned_lr == layout.tuned_lr and loaded.tuned_lr.chosen and loaded.hash == Layout.sample(model, space, seed=0).hash
    old = layout.to_dict()
    del old["tuned_lr"]
    old["metrics"] = {"standalone_lr": 3e-3, "standalone_lrs": [1e-3, 3e-3, 1e-2], "standalone_val_acc": 0.75}
    assert Layout.from_dict(old).tuned_lr == layout.tuned_lr
    assert Layout.from_dict({**old, "metrics": {}}).tuned_lr is None
    assert not TunedLr(1e-3, (1e-3,)).chosen  # one lr chose nothing


def test_sampling_covers_every_option(wrapped):
    model, space = wrapped
    seen = {t: set() for t in "ABCDE"}
    for seed in range(40):
        for choice in Layout.sample(model, space, seed=seed).layers.values():
            for t, o in zip("ABCDE", choice):
                seen[t].add(str(o))
    assert seen["A"] == {"LoRA_8", "LoRA_4", "vector", "constant", "none"}
    assert seen["C"] == {"LoRA_8", "LoRA_4", "vector", "none"}
    assert seen["E"] == {"vector", "constant", "none"}


def _layout_dict(model, space):
    return Layout.sample(model, space, seed=0).to_dict()


def _edit(data, path, value):
    *keys, last = path
    node = data
    for k in keys:
        node = node[k]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("layers", "blocks.1.mlp.fc2", "A"), "LoRA_x", r"layer 'blocks.1.mlp.fc2', field 'A': unknown option 'LoRA_x'"),
        (("layers", "blocks.0.attn.qkv", "B"), "LoRA_16", r"layer 'blocks.0.attn.qkv', field 'B': LoRA_16 has rank 16 above the space's maximum 8"),
        (("layers", "blocks.0.attn.qkv", "C"), "constant", r"layer 'blocks.0.attn.qkv', field 'C': constant is not an option"),
        (("layers", "blocks.0.attn.qkv", "B"), "LoRA_2", r"field 'B': LoRA_2 is not an option here; use one of LoRA_8, LoRA_4"),
        (("layers", "blocks.0.attn.proj"), _DELETE, r"no entry for layer 'blocks.0.attn.proj'"),
        (("layers", "blocks.0.attn.proj", "E"), _DELETE, r"layer 'blocks.0.attn.proj': missing field 'E'"),
        (("layers", "blocks.7.attn.qkv"), {t: "none" for t in "ABCDE"}, r"layer 'blocks.7.attn.qkv' that this model does not target"),
        (("layers", "blocks.0.attn.qkv", "F"), "none", r"unknown field\(s\) \['F'\]"),
        (("model",), "vit_base_patch16_224", r"layout is for model 'vit_base_patch16_224' but this model is 'vit_tiny_patch16_224'"),
        (("format",), "glora-layout/0", r"field 'format' is 'glora-layout/0', expected 'glora-layout/1'"),
        (("trainable_params",), 12, r"says trainable_params=12 but it counts"),
        (("tuned_lr",), {"lr": 0.5, "grid": [1e-3, 1e-2]}, r"field 'tuned_lr'.lr=0.5 is not one of its grid \[0.001, 0.01\]"),
        (("tuned_lr",), [1e-3], r"field 'tuned_lr' must be an object"),
        (("metrics",), "fast", r"field 'metrics' must be an object"),
    ],
)
def test_bad_layout_gets_one_clear_error(wrapped, tmp_path, path, value, message):
    model, space = wrapped
    data = _layout_dict(model, space)
    _edit(data, path, value)
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(data))
    with pytest.raises(LayoutError, match=message):
        set_layout(model, Layout.load(file))


def test_layout_of_a_model_with_other_shapes_is_rejected(tmp_path):
    space = Space.preset("large")
    small = wrap(make_vit(), space)
    wide = wrap(make_vit(embed_dim=96), space)
    Layout.sample(small, space, seed=0).save(tmp_path / "small.json")
    with pytest.raises(LayoutError, match="trainable_params=.* counts .* layout of another model"):
        set_layout(wide, Layout.load(tmp_path / "small.json"))


class _Boom:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_loading_never_executes_code(tmp_path):
    boom = _Boom()
    boom.marker = str(tmp_path / "executed")
    file = tmp_path / "layout.json"
    file.write_bytes(pickle.dumps(boom))
    with pytest.raises(LayoutError, match="not a JSON layout file"):
        Layout.load(file)
    assert not (tmp_path / "executed").exists()
    with pytest.raises(LayoutError, match="does not exist"):
        Layout.load(tmp_path / "missing.json")


def test_uniform_layout(wrapped):
    model, space = wrapped
    layout = Layout.uniform(model, space, A="LoRA_8", B="LoRA_8", C="LoRA_8", D="vector", E="vector")
    out_f, in_f = 3 * 48, 48
    qkv = 8 * (out_f + in_f) * 2 + 8 * (in_f + 1) + 2 * out_f
    assert layout.layer_params("blocks.0.attn.qkv") == qkv
    with pytest.raises(LayoutError, match="not in the space"):
        Layout.uniform(model, space, A="LoRA_2")


def _write(tmp_path, data, raw=None):
    """``data`` as a layout file; ``raw`` puts a JSON token json.dumps cannot write (1e400) at "@@"."""
    text = json.dumps(data)
    if raw is not None:
        text = text.replace('"@@"', raw)
    file = tmp_path / "bad.json"
    file.write_text(text)
    return file


@pytest.mark.parametrize("key", ["trainable_params", "budget"])
@pytest.mark.parametrize("value, raw", [(None, "NaN"), (None, "1e400"), (None, "-1e400"), ("12", None), (True, None), (-1, None), (2.5, None)])
def test_counts_in_a_layout_file_are_whole_finite_numbers(wrapped, tmp_path, key, value, raw):
    model, space = wrapped
    data = _layout_dict(model, space)
    data[key] = "@@" if raw is not None else value
    file = _write(tmp_path, data, raw)
    with pytest.raises(LayoutError, match=rf"{file}: field '{key}'=.* is not a whole number ≥ 0 \(or null\)"):
        Layout.load(file)


@pytest.mark.parametrize("edit, message", [
    ({"ranks": [1e9]}, r"field 'space': space.ranks=\[1000000000.0\] must be a JSON list of whole numbers ≥ 1"),
    ({"ranks": [True]}, r"field 'space': space.ranks=\[True\]"),
    ({"ranks": "8421"}, r"field 'space': space.ranks='8421' must be a JSON list"),
    ({"options": {"A": "lora"}}, r"field 'space': space.options.A='lora' must be a JSON list of kinds"),
])
def test_a_layout_files_space_is_json_lists(wrapped, tmp_path, edit, message):
    model, space = wrapped
    data = _layout_dict(model, space)
    data["space"].update(edit)
    file = _write(tmp_path, data)
    with pytest.raises(LayoutError, match=rf"{file}: {message}"):
        Layout.load(file)


def test_a_layout_files_ranks_must_fit_the_model_it_is_bound_to(wrapped, tmp_path):
    model, space = wrapped
    data = _layout_dict(model, space)
    data["space"]["ranks"] = [4096, 8, 4]
    file = _write(tmp_path, data)
    layout = Layout.load(file)  # the file alone cannot know the model's widths
    with pytest.raises(SpaceError, match=rf"{file}: space.ranks=\[4096, 8, 4\]: rank 4096 is wider than layer 'blocks.0.attn.qkv'"):
        wrap(make_vit(), layout.space)
    with pytest.raises(LayoutError, match=r"space.ranks=\[4096, 8, 4\]: rank 4096 is wider than layer"):
        layout.check(space.target_layers(model), layout.space)


def test_a_duplicated_key_in_a_layout_file_is_refused(wrapped, tmp_path):
    model, space = wrapped
    data = _layout_dict(model, space)
    row = json.dumps(data["layers"]["blocks.0.attn.qkv"])
    text = json.dumps(data).replace('"layers": {', f'"layers": {{"blocks.0.attn.qkv": {row}, ', 1)
    file = tmp_path / "dup.json"
    file.write_text(text)
    with pytest.raises(LayoutError, match=rf"{file}: key 'blocks.0.attn.qkv' appears twice in one object; keep one entry per key"):
        Layout.load(file)
