"""glora-retrain: merged export equals the unmerged layout; a plain timm model loads it."""
import json
import subprocess
import sys

import pytest
import timm
import torch
from conftest import job_config, make_vit, run_cli
from safetensors.torch import load_file

from glora.run.checkpoint import load_weights
from glora.run.errors import JobError
from glora.spaces import Layout, LayoutError, Space
from glora.stages.retrain import retrain_merge_export as retrain
from glora.stages.search import run_search
from glora.supernet import set_layout, wrap
from glora.supernet.layer import SUPPORT_TENSOR


@pytest.fixture(scope="module")
def layout_file(smoke_supernet, cache_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("search")
    run_search(job_config("search", cache_dir, f"supernet={smoke_supernet}", "search.budget=3000", "search.generations=1"), run)
    return run / "layout.json"


@pytest.fixture(scope="module")
def exported(layout_file, cache_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("retrain")
    metrics = retrain(job_config("retrain", cache_dir, f"layout={layout_file}", "export.peft=true"), run)
    return run, metrics


def test_merged_export_equals_the_unmerged_layout(exported):
    run, metrics = exported
    assert metrics["merged_predictions_equal"] and metrics["merged_max_logit_diff"] <= 1e-4
    assert metrics["test_acc"] == metrics["test_acc_unmerged"] and metrics["report_split"] == "test"
    assert metrics["trainable_params"] <= 3000 and metrics["head_params"] > 0
    for name in ("model.safetensors", "model.json", "metrics.json", "retrain.safetensors", "train_curves.png"):
        assert (run / name).is_file(), name


def test_plain_timm_loads_the_export_without_this_project(exported, tmp_path):
    run, _ = exported
    spec = json.loads((run / "model.json").read_text())
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    code = f"""
import json, sys, timm, torch
from safetensors.torch import load_file
spec = json.load(open({str(run / 'model.json')!r}))
model = timm.create_model(spec["name"], pretrained=False, num_classes=spec["num_classes"], **spec["kwargs"]).eval()
model.load_state_dict(load_file({str(run / 'model.safetensors')!r}), strict=True)
assert not {{"spaces", "supernet", "search"}} & {{m.split(".")[0] for m in sys.modules}}
overlay = timm.create_model(spec["name"], pretrained=True, num_classes=spec["num_classes"], **spec["kwargs"],
                            pretrained_cfg_overlay=dict(file={str(run / 'model.safetensors')!r}, num_classes=spec["num_classes"])).eval()
x = torch.load({str(tmp_path / 'x.pt')!r})
with torch.no_grad():
    assert torch.equal(model(x), overlay(x))
    torch.save(model(x), {str(tmp_path / 'y.pt')!r})
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The same weights as the unmerged GLoRA layout, rebuilt from the retraining checkpoint.
    layout = Layout.from_dict(spec["layout"])
    model = timm.create_model(spec["name"], pretrained=False, num_classes=spec["num_classes"], **spec["kwargs"]).eval()
    wrap(model, layout.space)
    set_layout(model, layout)
    load_weights(run / "retrain.safetensors", model, {"layout_hash": layout.hash})
    with torch.no_grad():
        assert (model(x) - torch.load(tmp_path / "y.pt")).abs().max().item() <= 1e-5


def test_export_peft_writes_an_adapter_peft_loads_onto_the_backbone(exported, tmp_path):
    """export.peft=true: peft/ on the pretrained backbone (taken from the retraining checkpoint's
    frozen base layers) gives the exported model's logits."""
    peft = pytest.importorskip("peft")
    run, metrics = exported
    spec = json.loads((run / "model.json").read_text())
    assert metrics["peft_adapter_bytes"] == (run / "peft" / "adapter_model.safetensors").stat().st_size
    assert json.loads((run / "peft" / "adapter_config.json").read_text())["peft_type"] == "GLORA"
    weights = load_file(run / "retrain.safetensors")
    backbone = {k.replace(".base_layer.", "."): v for k, v in weights.items() if k.rsplit(".", 1)[-1] not in SUPPORT_TENSOR}
    plain = timm.create_model(spec["name"], pretrained=False, num_classes=spec["num_classes"], **spec["kwargs"]).eval()
    plain.load_state_dict(backbone, strict=True)
    exported_model = timm.create_model(spec["name"], pretrained=False, num_classes=spec["num_classes"], **spec["kwargs"]).eval()
    exported_model.load_state_dict(load_file(run / "model.safetensors"), strict=True)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (peft.PeftModel.from_pretrained(plain, str(run / "peft"))(x) - exported_model(x)).abs().max().item() <= 1e-5


def test_retrain_trains_at_the_lr_the_reranking_chose_from_a_grid(layout_file, cache_dir, tmp_path):
    """A layout whose re-ranking chose its lr among several trains at that lr (the same
    weights as asking for it by hand); one chosen from a single lr, or with
    retrain.lr_from_search=false, trains at optim.lr."""
    base = job_config("retrain", cache_dir).optim.lr
    tuned = base * 7
    data = Layout.load(layout_file).to_dict()

    def layout_with(name: str, lrs: list[float]) -> str:
        data["tuned_lr"] = {"lr": tuned, "grid": lrs, "val_acc": 0.5}
        (tmp_path / name).write_text(json.dumps(data))
        return str(tmp_path / name)

    grid = layout_with("grid.json", [base, tuned])
    chosen = retrain(job_config("retrain", cache_dir, f"layout={grid}"), tmp_path / "chosen")
    by_hand = retrain(job_config("retrain", cache_dir, f"layout={grid}", "retrain.lr_from_search=false", f"optim.lr={tuned}"),
                      tmp_path / "by_hand")
    assert chosen["lr"] == by_hand["lr"] == tuned
    weights = {run: load_file(tmp_path / run / "model.safetensors") for run in ("chosen", "by_hand")}
    assert all(torch.equal(weights["chosen"][k], weights["by_hand"][k]) for k in weights["by_hand"])
    off = retrain(job_config("retrain", cache_dir, f"layout={grid}", "retrain.lr_from_search=false"), tmp_path / "off")
    single = retrain(job_config("retrain", cache_dir, f"layout={layout_with('one.json', [tuned])}"), tmp_path / "single")
    assert off["lr"] == single["lr"] == base
    assert not torch.equal(load_file(tmp_path / "off" / "model.safetensors")["head.weight"], weights["chosen"]["head.weight"])


def test_bad_input(layout_file, cache_dir, tmp_path):
    other = Layout.sample(make_vit(depth=3), Space.preset("large"), seed=0)
    other.save(tmp_path / "other.json")
    with pytest.raises(LayoutError, match="that this model does not target"):
        retrain(job_config("retrain", cache_dir, f"layout={tmp_path / 'other.json'}"), tmp_path / "a")
    narrow = Layout.load(layout_file).to_dict()  # the same layers, claimed for a space that targets only qkv
    narrow["space"]["targets"] = r".*attn\.qkv"
    (tmp_path / "narrow.json").write_text(json.dumps(narrow))
    with pytest.raises(LayoutError, match="layout has layer 'blocks.0.attn.proj' that this model does not target"):
        retrain(job_config("retrain", cache_dir, f"layout={tmp_path / 'narrow.json'}"), tmp_path / "b")
    with pytest.raises(JobError, match=r"above retrain.budget=10; search again under that budget"):
        retrain(job_config("retrain", cache_dir, f"layout={layout_file}", "retrain.budget=10"), tmp_path / "c")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(JobError, match="is not writable"):
        retrain(job_config("retrain", cache_dir, f"layout={layout_file}"), blocker / "run")
    proc = run_cli("glora-retrain", f"layout={layout_file}", f"hydra.run.dir={blocker / 'run'}", cwd=tmp_path)
    assert proc.returncode == 1 and "is not writable" in proc.stderr and "Traceback" not in proc.stderr
    bad = Layout.load(layout_file).to_dict()
    for i, (field, block) in enumerate((("lr", {"lr": "fast", "grid": [1e-3, 1e-2]}), ("lr", {"lr": 3e-3, "grid": [1e-3, 1e-2]}),
                                        ("grid", {"lr": 1e-2, "grid": 0.01}), ("grid", {"lr": 1e-2, "grid": [1e-2, -1]}),
                                        ("val_acc", {"lr": 1e-2, "grid": [1e-2], "val_acc": 7}))):
        bad["tuned_lr"] = block
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(LayoutError, match=rf"field 'tuned_lr'.{field}=.* fix it"):
            retrain(job_config("retrain", cache_dir, f"layout={tmp_path / 'bad.json'}"), tmp_path / f"e{i}")
        assert not (tmp_path / f"e{i}" / "retrain.safetensors").exists()  # refused before any training
    del bad["tuned_lr"]  # a layout written before tuned_lr kept the choice in metrics: read and checked the same way
    bad["metrics"] = {"standalone_lr": 1e-2, "standalone_lrs": 0.01}
    (tmp_path / "old.json").write_text(json.dumps(bad))
    with pytest.raises(LayoutError, match=r"metrics.standalone_lr / standalone_lrs\): field 'tuned_lr'.grid=0.01"):
        retrain(job_config("retrain", cache_dir, f"layout={tmp_path / 'old.json'}"), tmp_path / "old")
    with pytest.raises(JobError, match="layout is not set"):
        retrain(job_config("retrain", cache_dir), tmp_path / "d")
