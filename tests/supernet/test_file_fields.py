"""What a checkpoint file's header and a torch state file may hold: one JSON object with no
duplicated key, and plain tensors; anything else is one CheckpointError naming the file."""
import json

import pytest
import torch
from safetensors.torch import save_file

from glora.run.checkpoint import load_state, load_weights, read_identity
from glora.run.errors import CheckpointError


def _weights(tmp_path, header):
    path = tmp_path / "supernet.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"glora": header})
    return path


@pytest.mark.parametrize("header, message", [
    ("{not json", r"its 'glora' header is not JSON \(.*\); re-export it"),
    ("[1, 2]", r"its 'glora' header is JSON but not an object \(list\); re-export it"),
    ('"a string"', r"its 'glora' header is JSON but not an object \(str\); re-export it"),
    ('{"space": {"ranks": [8]}, "space": {"ranks": [4096]}}', r"its 'glora' header has key 'space' twice; re-export it"),
])
def test_a_checkpoint_header_must_be_one_json_object(tmp_path, header, message):
    path = _weights(tmp_path, header)
    with pytest.raises(CheckpointError, match=rf"checkpoint '{path}': {message}"):
        read_identity(path)
    with pytest.raises(CheckpointError, match=rf"checkpoint '{path}': {message}"):
        load_weights(path, torch.nn.Linear(2, 1), {"model": "x"})


def test_a_good_header_reads_back(tmp_path):
    identity = {"model": "vit_tiny_patch16_224", "space": {"ranks": [8, 4]}}
    assert read_identity(_weights(tmp_path, json.dumps(identity))) == identity


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_state_file_with_python_objects_gets_our_message_not_torchs(tmp_path):
    path = tmp_path / "supernet-state-0001.pt"
    torch.save({"epoch": 1, "payload": _Boom(str(tmp_path / "executed"))}, path)
    with pytest.raises(CheckpointError) as info:
        load_state(path)
    message = str(info.value)
    assert message == (f"{path} holds Python objects that a weights-only load refuses; "
                       "convert it to .safetensors or a plain state_dict")
    assert "weights_only=False" not in message and "\n" not in message
    assert not (tmp_path / "executed").exists()
    torch.save({"epoch": 1, "rng": torch.zeros(3)}, path)
    assert load_state(path)["epoch"] == 1
