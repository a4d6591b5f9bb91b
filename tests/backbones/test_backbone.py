"""A real backbone by timm name from a local file; never a hub download."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from glora.backbones import ModelConfig, load_backbone
from glora.run.errors import CheckpointError

KW = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)


def _saved(tmp_path, suffix, **kwargs):
    torch.manual_seed(3)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=7, **{**KW, **kwargs})
    path = tmp_path / f"ckpt{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    return model, path


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_checkpoint_loads_all_but_the_head(tmp_path, suffix):
    source, path = _saved(tmp_path, suffix)
    model, spec = load_backbone(ModelConfig(name="vit_tiny_patch16_224", kwargs=KW, checkpoint=str(path)), num_classes=4)
    assert spec.source == "file" and spec.preprocess.img_size == 32 and model.head.out_features == 4
    theirs = source.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, theirs[key]), key


def test_checkpoint_of_another_model(tmp_path):
    _, path = _saved(tmp_path, ".safetensors", depth=3)
    with pytest.raises(CheckpointError, match=r"does not fit vit_tiny_patch16_224: \d+ missing keys .* unexpected"):
        load_backbone(ModelConfig(name="vit_tiny_patch16_224", kwargs=KW, checkpoint=str(path)), 4)
    _, path = _saved(tmp_path, ".pth", embed_dim=96)
    with pytest.raises(CheckpointError, match="does not fit vit_tiny_patch16_224: size mismatch"):
        load_backbone(ModelConfig(name="vit_tiny_patch16_224", kwargs=KW, checkpoint=str(path)), 4)


def test_truncated_checkpoint(tmp_path):
    _, path = _saved(tmp_path, ".safetensors")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_backbone(ModelConfig(name="vit_tiny_patch16_224", kwargs=KW, checkpoint=str(path)), 4)


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_checkpoint_is_never_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"blocks.0.attn.qkv.weight": _Boom(str(tmp_path / "executed"))}, path)
    with pytest.raises(CheckpointError, match="holds Python objects that a weights-only load refuses; convert it to .safetensors") as err:
        load_backbone(ModelConfig(name="vit_tiny_patch16_224", kwargs=KW, checkpoint=str(path)), 4)
    assert not (tmp_path / "executed").exists()
    assert "weights_only=False" not in str(err.value)  # torch's (and timm's) advice would run the file's code


def test_no_hub_download_ever(tmp_path):
    with pytest.raises(CheckpointError, match="needs local weights: set model.checkpoint"):
        load_backbone(ModelConfig(name="vit_tiny_patch16_224", kwargs=KW), 4)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone(ModelConfig(name="vit_tiny_patch16_224", kwargs=KW, checkpoint=str(tmp_path / "x.pth")), 4)
    with pytest.raises(CheckpointError, match="model.name='not_a_model'"):
        load_backbone(ModelConfig(name="not_a_model"), 4)
    model, spec = load_backbone(ModelConfig(name="vit_tiny_patch16_224", kwargs=KW, pretrained=False), 4)
    assert spec.source == "random"
