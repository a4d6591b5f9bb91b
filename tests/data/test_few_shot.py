"""k-shot splits (data.shots): exactly k per class for train and val_shots per class for val,
drawn from train + val, disjoint from each other and from test, the same for the same
split seed and another for another, on every data source."""
import numpy as np
import pytest
import torch
from PIL import Image

from glora.data import DataConfig, Preprocess, build_task, task_label
from glora.data.few_shot import draw_shots, labels_of
from glora.run.errors import ConfigError, DataError


def _images(data) -> torch.Tensor:
    return torch.stack([data[i][0] for i in range(len(data))])


def _keys(data) -> set[bytes]:
    """Each image of ``data`` as bytes: what 'the same image' means across splits."""
    return {x.numpy().tobytes() for x in _images(data)}


def _check_shots(task, k: int, val_k: int, whole) -> None:
    for split, per_class in (("train", k), ("val", val_k)):
        counts = np.bincount(labels_of(task.splits[split]), minlength=task.num_classes)
        assert (counts == per_class).all(), (split, counts)
    train, val, test = _keys(task.splits["train"]), _keys(task.splits["val"]), _keys(task.splits["test"])
    assert len(train) == k * task.num_classes and not train & val and not (train | val) & test
    assert (train | val) <= _keys(whole.splits["trainval"])  # drawn from the labelled pool, never from test
    assert _keys(task.splits["trainval"]) == train | val
    assert torch.equal(_images(task.splits["test"]), _images(whole.splits["test"]))  # test is left whole


def test_embedded_task_keeps_k_per_class_and_the_same_draw_for_the_same_seed():
    pre = Preprocess(16)
    whole = build_task(DataConfig(task="count"), pre)
    task = build_task(DataConfig(task="count", shots=4, val_shots=2), pre)
    _check_shots(task, 4, 2, whole)
    assert task.name == task_label(task.cfg) == "count-4shot"
    again = build_task(DataConfig(task="count", shots=4, val_shots=2), pre)
    other = build_task(DataConfig(task="count", shots=4, val_shots=2, split_seed=1), pre)
    assert torch.equal(_images(again.splits["train"]), _images(task.splits["train"]))
    assert _keys(other.splits["train"]) != _keys(task.splits["train"])
    assert len(build_task(DataConfig(task="count", shots=3), pre).splits["val"]) == 3 * 6  # val_shots defaults to shots


def test_packaged_task_few_shot():
    pre = Preprocess(16)
    whole = build_task(DataConfig(task="sklearn_digits"), pre)
    _check_shots(build_task(DataConfig(task="sklearn_digits", shots=2), pre), 2, 2, whole)


def _save(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 255 - value, 7)).save(path)


def test_imagefolder_and_vtab1k_folders(tmp_path):
    for split, per_class in (("train", 3), ("val", 2), ("test", 2)):
        for c, name in enumerate(("ant", "bee", "cow")):
            for i in range(per_class):
                _save(tmp_path / "tree" / split / name / f"{i}.png", 60 * c + 10 * i + (100 if split == "test" else 0) + (5 if split == "val" else 0))
    pre = Preprocess(8)
    whole = build_task(DataConfig(source="imagefolder", root=str(tmp_path / "tree")), pre)
    _check_shots(build_task(DataConfig(source="imagefolder", root=str(tmp_path / "tree"), shots=3, val_shots=2), pre), 3, 2, whole)
    with pytest.raises(DataError, match=r"needs 6 labelled images per class, but class 0 \('ant'\) of task 'tree' has 5"):
        build_task(DataConfig(source="imagefolder", task=None, root=str(tmp_path / "tree"), shots=4, val_shots=2), pre)

    root = tmp_path / "vtab"
    lines = {"train800": [], "val200": [], "test": []}
    for split, count in (("train800", 9), ("val200", 3), ("test", 6)):
        for i in range(count):
            rel = f"images/{split}_{i}.png"
            _save(root / rel, 20 * i + (3 if split == "test" else 0) + (1 if split == "val200" else 0))
            lines[split].append(f"{rel} {i % 3}")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for name, rows in lines.items():
        (root / f"{name}.txt").write_text("\n".join(rows) + "\n")
    whole = build_task(DataConfig(source="vtab1k", root=str(root)), pre)
    _check_shots(build_task(DataConfig(source="vtab1k", root=str(root), shots=2, val_shots=1), pre), 2, 1, whole)


def test_too_few_images_in_a_class_names_the_class_and_its_count():
    labels = np.array([0] * 10 + [1] * 3)
    with pytest.raises(DataError, match=r"class 1 of task 'x' has 3 in train \+ val; lower data.shots"):
        draw_shots(labels, 2, 2, 2, 0, "task 'x'")
    train, val = draw_shots(labels, 2, 2, 1, 0, "task 'x'")
    assert sorted(labels[train].tolist()) == [0, 0, 1, 1] and sorted(labels[val].tolist()) == [0, 1] and not set(train) & set(val)


@pytest.mark.parametrize("fields, field", [({"shots": 0}, "data.shots"), ({"val_shots": 2}, "data.val_shots"),
                                           ({"shots": 2, "rank_images": 100}, "data.rank_images"), ({"shots": 2, "split_seed": -1}, "data.split_seed")])
def test_bad_shot_settings_are_one_clear_error(fields, field):
    with pytest.raises(ConfigError, match=rf"^{field}="):
        DataConfig(**fields)
