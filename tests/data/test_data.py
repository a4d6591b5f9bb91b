"""Embedded suite, VTAB-1k folders and ImageFolder trees, and their errors; animal-mnist's
pickles read by an unpickler that rebuilds numpy arrays and nothing else."""
import gzip
import importlib.metadata
import os
import pickle
import shlex

import numpy as np
import pytest
import torch
from PIL import Image

from glora.data import DataConfig, Preprocess, build_task, packaged
from glora.data.embedded import TARGET_TASKS, TASKS, make_task
from glora.data.safe_pickle import read_array
from glora.run.errors import ConfigError, DataError


@pytest.mark.parametrize("task", sorted(TASKS))
def test_embedded_tasks_are_deterministic_and_vtab_shaped(task):
    sizes = {"train": 800, "val": 200, "test": 300} if task == "shapes" else None
    a, b, c = make_task(task, 0, sizes), make_task(task, 0, sizes), make_task(task, 1, sizes)
    for split in ("train", "val", "test"):
        assert np.array_equal(a[split][0], b[split][0]) and np.array_equal(a[split][1], b[split][1])
    assert not np.array_equal(a["train"][0], c["train"][0])
    assert len(a["train"][1]) == 800 and len(a["val"][1]) == 200 and len(a["test"][1]) > 0
    assert a["train"][0].shape[1:] == (32, 32, 3) and a["train"][0].dtype == np.uint8
    classes = TASKS[task][1]
    assert set(np.unique(a["train"][1])) == set(range(classes))


@pytest.mark.slow
def test_no_target_image_appears_in_the_source_task():
    """Pretraining never sees a target task's images (no leakage from source to targets)."""
    source = make_task("shapes", 0, {"train": 3000, "val": 100, "test": 100})
    seen = {img.tobytes() for split in source.values() for img in split[0]}
    for task in TARGET_TASKS:
        target = make_task(task, 0)
        assert not any(img.tobytes() in seen for split in target.values() for img in split[0]), task


def test_embedded_task_as_tensors():
    task = build_task(DataConfig(task="count"), Preprocess(48))
    x, y = next(iter(task.loader("train", train=True, seed=0)))
    assert x.shape == (64, 3, 48, 48) and x.dtype == torch.float32 and -1.01 <= x.min() and x.max() <= 1.01
    assert len(task.splits["trainval"]) == 1000 and task.num_classes == 6
    first = [next(iter(task.loader("train", train=True, seed=s)))[1] for s in (3, 3, 4)]
    assert torch.equal(first[0], first[1]) and not torch.equal(first[0], first[2])


def _image(path, size, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)


@pytest.fixture
def vtab_root(tmp_path):
    """A tiny VTAB-1k task folder: greyscale and odd-sized images, 3 classes."""
    root = tmp_path / "vtab" / "tiny"
    lines = {}
    for split, count in (("train800", 6), ("val200", 3), ("test", 4)):
        rows = []
        for i in range(count):
            rel = f"images/{split}_{i}.{'png' if i % 2 else 'jpg'}"
            _image(root / rel, (20 + i, 17), "L" if i % 2 else "RGB")
            rows.append(f"{rel} {i % 3}")
        lines[split] = rows
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for name, rows in lines.items():
        (root / f"{name}.txt").write_text("\n".join(rows) + "\n")
    return root


def test_vtab1k_folder(vtab_root):
    task = build_task(DataConfig(source="vtab1k", root=str(vtab_root), batch_size=4), Preprocess(24, (0.5,) * 3, (0.25,) * 3))
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 6, "val": 3, "trainval": 9, "test": 4}
    assert task.num_classes == 3
    x, y = next(iter(task.loader("train", train=True)))
    assert x.shape == (4, 3, 24, 24) and y.dtype == torch.int64


def test_imagefolder_tree(tmp_path):
    for split in ("train", "val", "test"):
        for cls in ("cat", "dog"):
            for i in range(2):
                _image(tmp_path / split / cls / f"{i}.png", (9 + i, 13), "L")
    task = build_task(DataConfig(source="imagefolder", root=str(tmp_path)), Preprocess(16))
    assert task.num_classes == 2 and len(task.splits["train"]) == 4 and len(task.splits["trainval"]) == 8
    x, y = task.splits["test"][3]
    assert x.shape == (3, 16, 16) and y == 1


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda root: None, None),
        (lambda root: (root / "images" / "test_2.jpg").unlink(), r"test.txt:3: image 'images/test_2.jpg' does not exist"),
        (lambda root: (root / "val200.txt").unlink(), r"has no val200.txt"),
        (lambda root: (root / "test.txt").write_text("images/test_0.jpg 7\n"), r"test split: label 7 of test_0.jpg is out of range 0..2"),
        (lambda root: (root / "test.txt").write_text("images/test_0.jpg cat\n"), r"test.txt:1: expected '<image path> <integer label>'"),
    ],
)
def test_bad_vtab_folder_gets_one_clear_error(vtab_root, mutate, message):
    mutate(vtab_root)
    cfg = DataConfig(source="vtab1k", root=str(vtab_root))
    if message is None:
        build_task(cfg, Preprocess(16))
    else:
        with pytest.raises(DataError, match=message):
            build_task(cfg, Preprocess(16))


def test_labels_above_num_classes(vtab_root):
    with pytest.raises(DataError, match="out of range 0..1 \\(data.num_classes\\)"):
        build_task(DataConfig(source="vtab1k", root=str(vtab_root), num_classes=2), Preprocess(16))


@pytest.mark.parametrize("source", ["vtab1k", "imagefolder"])
def test_missing_or_empty_root(tmp_path, source):
    with pytest.raises(DataError, match="does not exist"):
        build_task(DataConfig(source=source, root=str(tmp_path / "nope")), Preprocess(16))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        build_task(DataConfig(source=source, root=str(tmp_path / "empty")), Preprocess(16))
    with pytest.raises(DataError, match="data.root is not set"):
        build_task(DataConfig(source=source, root=None), Preprocess(16))


def test_unknown_task_and_source():
    with pytest.raises(DataError, match="data.task='nope' is not a built-in task"):
        build_task(DataConfig(task="nope"), Preprocess(32))
    with pytest.raises(ConfigError, match="data.source='s3' cannot work: use one of"):
        build_task(DataConfig(source="s3"), Preprocess(32))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["count", "digits"])
def test_rank_images_are_held_out_and_leave_the_other_splits_alone(task):
    plain = make_task(task, 0)
    more = make_task(task, 0, rank_images=300)
    assert len(more["rank"][1]) == 300
    for split in ("train", "val"):
        assert np.array_equal(plain[split][0], more[split][0]) and np.array_equal(plain[split][1], more[split][1])
    # no ranking image is also a training, val or test image
    seen = {img.tobytes() for split in ("train", "val", "test") for img in more[split][0]}
    assert not any(img.tobytes() in seen for img in more["rank"][0])
    pre = Preprocess(img_size=32)
    data = build_task(DataConfig(task=task, rank_images=300), pre)
    assert len(data.ranking_loader().dataset) == 200 + 300
    assert len(build_task(DataConfig(task=task), pre).ranking_loader().dataset) == 200


def test_rank_images_bad_input():
    with pytest.raises(ConfigError, match="data.rank_images"):
        DataConfig(task="count", rank_images=-1)
    with pytest.raises(ConfigError, match="data.rank_images.*built-in tasks"):
        DataConfig(source="imagefolder", root="/nowhere", rank_images=100)
    with pytest.raises(DataError, match="data.rank_images=700 leaves fewer than 200 digits test images"):
        build_task(DataConfig(task="digits", rank_images=700), Preprocess(img_size=32))


# ---- animal-mnist: numpy arrays out of pickles, nothing else ----------------------------------
ANIMALS = "animal_mnist/data/Animal_MNIST"  # the wheel's folder, relative to site-packages
REFUSAL = "(only numpy arrays are read from animal-mnist's files; reinstall the package: pip install --force-reinstall --no-deps animal-mnist)"


def _pickle(path, obj, protocol=4):  # the wheel's files are gzipped protocol-4 pickles
    with gzip.open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=protocol)


def _fake_animal_mnist(root, monkeypatch, per_class=3, size=8):
    """The wheel's two pickles (images sorted by class, labels beside them) under ``root``,
    found there by the distribution lookup, so the task's own relative path is used."""
    labels = np.repeat(np.arange(10), per_class)
    images = np.random.default_rng(0).integers(0, 256, (len(labels), size, size), dtype=np.uint8)
    (root / ANIMALS).mkdir(parents=True)
    _pickle(root / ANIMALS / "animal_data_version_3.gz", images)
    _pickle(root / ANIMALS / "animal_label_version_3.gz", labels)

    class Installed:
        version = "0.4"

        def locate_file(self, file):
            return root / file

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Installed())
    return images, labels


class _RunsOnLoad:
    """Pickles as a call of ``os.system(command)``: what a tampered file would carry."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("array", [
    np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8),
    np.arange(-5, 7, dtype=np.int64),
    np.asfortranarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)),  # column-major
    np.zeros((0, 3), dtype=np.int32),
])
def test_the_numpy_only_unpickler_reads_numpy_arrays_exactly(tmp_path, array):
    for protocol in (3, 4):
        _pickle(tmp_path / "a.gz", array, protocol)
        back = read_array(tmp_path / "a.gz", "animal-mnist", "fix")
        assert type(back) is np.ndarray and back.dtype == array.dtype and back.shape == array.shape
        assert np.array_equal(back, array)
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(array, protocol=4))  # not gzipped
    assert np.array_equal(read_array(tmp_path / "a.pkl", "animal-mnist", "fix"), array)
    # numpy 1 wrote numpy.core (animal-mnist's files do); protocol 3 spells globals as plain text
    numpy1 = pickle.dumps(array, protocol=3).replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n" in numpy1
    (tmp_path / "a.pkl").write_bytes(numpy1)
    assert np.array_equal(read_array(tmp_path / "a.pkl", "animal-mnist", "fix"), array)


def test_a_pickle_that_would_run_a_command_is_refused_before_it_runs(tmp_path, monkeypatch):
    _fake_animal_mnist(tmp_path, monkeypatch, per_class=110)
    marker = tmp_path / "ran"
    labels = tmp_path / ANIMALS / "animal_label_version_3.gz"
    _pickle(labels, _RunsOnLoad(f"touch {shlex.quote(str(marker))}"))
    with pytest.raises(DataError) as refused:
        packaged.load_real_task("animals", 0, 20)
    assert str(refused.value) == f"{labels}: refused to unpickle global '{os.system.__module__}.system' {REFUSAL}"
    assert not marker.exists()
    with gzip.open(labels, "rb") as handle:  # the payload is live: plain pickle runs it
        pickle.load(handle)
    assert marker.exists()


@pytest.mark.parametrize("content, message", [
    ([1, 2, 3], "holds a list, not a numpy array of numbers"),
    (np.array([1, "a"], dtype=object), "holds an array of object, not a numpy array of numbers"),
    (b"\x80\x04truncated", "not a readable pickle of a numpy array"),
])
def test_a_file_that_is_not_a_numeric_array_is_one_line(tmp_path, content, message):
    path = tmp_path / "a.gz"
    if isinstance(content, bytes):
        with gzip.open(path, "wb") as handle:
            handle.write(content)
    else:
        _pickle(path, content)
    with pytest.raises(DataError, match=f"^{path}: {message}.*; fix$"):
        read_array(path, "animal-mnist", "fix")


def test_animals_from_the_wheel_layout_are_rgb_with_their_labels(tmp_path, monkeypatch):
    images, labels = _fake_animal_mnist(tmp_path, monkeypatch)
    x, y = packaged._read_animals(tmp_path / packaged.REAL_TASKS["animals"].file, 8)
    assert x.shape == (30, 8, 8, 3) and x.dtype == np.uint8 and np.array_equal(y, labels)
    assert all(np.array_equal(x[..., c], images) for c in range(3))  # grey made RGB, size kept exactly
    x, _ = packaged._read_animals(tmp_path / packaged.REAL_TASKS["animals"].file, 20)
    assert x.shape == (30, 20, 20, 3) and x.dtype == np.uint8


def test_animals_is_a_vtab_shaped_real_task(tmp_path, monkeypatch):
    _fake_animal_mnist(tmp_path, monkeypatch, per_class=110)
    task = build_task(DataConfig(task="animals", seed=0), Preprocess(20))
    assert task.name == "animals" and task.num_classes == 10
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 800, "val": 200, "test": 100, "trainval": 1000}
    splits = packaged.load_real_task("animals", 0, 20)
    assert splits["train"][0].shape == (800, 20, 20, 3) and set(np.unique(splits["train"][1])) <= set(range(10))


def test_animals_missing_says_install_it_without_its_dependencies(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DataError, match="^this task needs the animal-mnist package, not installed here: pip install --no-deps animal-mnist$"):
        build_task(DataConfig(task="animals"), Preprocess(20))


def test_the_real_animal_mnist_loads_as_a_vtab_task():
    try:
        importlib.metadata.distribution("animal-mnist")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("animal-mnist is not installed (pip install --no-deps animal-mnist)")
    splits = packaged.load_real_task("animals", 0, 28)
    assert {k: len(v[1]) for k, v in splits.items()} == {"train": 800, "val": 200, "test": 9000}
    assert splits["train"][0].shape == (800, 28, 28, 3) and splits["train"][0].dtype == np.uint8
    assert set(np.unique(splits["train"][1])) == set(range(10))
    assert np.bincount(np.concatenate([y for _, y in splits.values()])).tolist() == [1000] * 10
