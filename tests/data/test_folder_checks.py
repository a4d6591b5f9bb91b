"""Bad files and values refused where they are read: non-regular files named like images,
16-bit PNGs, empty classes, VTAB-1k list files (labels, paths, encoding) and task names."""
import os
import threading

import numpy as np
import pytest
from PIL import Image

from glora.data import DataConfig, Preprocess, build_task
from glora.data.folders import _decode
from glora.run.errors import ConfigError, DataError


def _png(path, label=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 7), 40 * label, np.uint8), "L").save(path)


def _imagefolder(root, classes=("cat", "dog")):
    for split in ("train", "val", "test"):
        for i, name in enumerate(classes):
            _png(root / split / name / "0.png", i)
    return root


def _vtab(root, labels=(0, 1, 2)):
    """A VTAB-1k folder whose every list names one image per label."""
    rows = []
    for label in labels:
        _png(root / "images" / f"{label}.png", label)
        rows.append(f"images/{label}.png {label}")
    for name in ("train800", "val200", "train800val200", "test"):
        (root / f"{name}.txt").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def unblock():
    """Opens the write end of a FIFO whenever a reader waits on it, so that a regression (the
    FIFO opened before its kind is checked) fails the test instead of hanging it."""
    fifos, done = [], threading.Event()

    def run():
        while not done.wait(0.05):
            for fifo in fifos:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # no reader yet
                    pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield fifos.append
    done.set()
    thread.join()


def test_fifo_named_like_an_image_is_refused_before_it_is_opened(tmp_path, unblock):
    root = _imagefolder(tmp_path / "tree")
    fifo = root / "train" / "cat" / "1.png"
    os.mkfifo(fifo)
    unblock(fifo)
    with pytest.raises(DataError, match=r"1\.png is a FIFO, not an image file"):
        build_task(DataConfig(source="imagefolder", root=str(root)), Preprocess(8))


def test_fifo_or_folder_in_a_vtab_list_is_refused(tmp_path, unblock):
    root = _vtab(tmp_path / "vtab")
    os.mkfifo(root / "images" / "pipe.png")
    unblock(root / "images" / "pipe.png")
    (root / "images" / "dir.png").mkdir()
    for name in ("pipe", "dir"):
        (root / "test.txt").write_text(f"images/0.png 0\nimages/{name}.png 1\n")
        with pytest.raises(DataError, match=rf"{name}\.png is a (FIFO|folder), not an image file"):
            build_task(DataConfig(source="vtab1k", root=str(root)), Preprocess(8))


def test_16_bit_png_is_scaled_not_saturated(tmp_path):
    grey8 = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    Image.fromarray(grey8, "L").save(tmp_path / "8.png")
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "16.png")
    with Image.open(tmp_path / "16.png") as img:
        assert img.mode.startswith("I")  # 16-bit as read by PIL
    rgb16, rgb8 = np.asarray(_decode(tmp_path / "16.png")), np.asarray(_decode(tmp_path / "8.png"))
    assert (rgb16 == 255).mean() < 0.01
    assert np.abs(rgb16.astype(int) - rgb8.astype(int)).max() <= 1


@pytest.mark.parametrize("where", ["empty", "val_only", "test_only"])
def test_class_without_training_images_is_refused(tmp_path, where):
    root = _imagefolder(tmp_path / "tree")
    if where == "empty":
        (root / "train" / "bird").mkdir()
        (root / "train" / "bird" / "notes.txt").write_text("no images here")
    else:
        _png(root / where.split("_")[0] / "bird" / "0.png")
    with pytest.raises(DataError, match=r"bird.*no training images.*add them to .*train/bird"):
        build_task(DataConfig(source="imagefolder", root=str(root)), Preprocess(8))


def test_vtab_labels_with_gaps_are_refused(tmp_path):
    root = _vtab(tmp_path / "vtab", labels=(0, 1, 5))
    with pytest.raises(DataError, match=r"train800val200\.txt: labels 0\.\.5 miss 2, 3, 4"):
        build_task(DataConfig(source="vtab1k", root=str(root)), Preprocess(8))
    assert build_task(DataConfig(source="vtab1k", root=str(root), num_classes=6), Preprocess(8)).num_classes == 6


@pytest.mark.parametrize("line", ["../outside.png 0", "{abs} 0", "images/../../outside.png 0"])
def test_vtab_path_outside_root_is_refused(tmp_path, line):
    root = _vtab(tmp_path / "vtab")
    _png(tmp_path / "outside.png")
    (root / "test.txt").write_text("images/0.png 0\n" + line.format(abs=tmp_path / "outside.png") + "\n")
    with pytest.raises(DataError, match=r"test\.txt:2: image .* is outside data\.root"):
        build_task(DataConfig(source="vtab1k", root=str(root)), Preprocess(8))


@pytest.mark.parametrize("label", ["--1", "\u00b2", "-1", "+1", "1.0", "\u0661"])
def test_vtab_labels_are_parsed_strictly(tmp_path, label):
    root = _vtab(tmp_path / "vtab")
    (root / "test.txt").write_text(f"images/0.png 0\nimages/1.png {label}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test\.txt:2: expected '<image path> <integer label>'.*ASCII digits"):
        build_task(DataConfig(source="vtab1k", root=str(root)), Preprocess(8))


def test_latin1_list_file_is_refused(tmp_path):
    root = _vtab(tmp_path / "vtab")
    (root / "test.txt").write_bytes("images/0.png 0\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"test\.txt is not UTF-8 .*save it as UTF-8"):
        build_task(DataConfig(source="vtab1k", root=str(root)), Preprocess(8))


@pytest.mark.parametrize("task", ["../../../ESCAPE", "a/b", "a\\b", "..", ".", "x y", "", "t\u00e2che"])
def test_task_names_that_are_not_plain_names_are_refused(task):
    with pytest.raises(ConfigError, match=r"data\.task=.* cannot work: use a name of letters"):
        DataConfig(task=task)


@pytest.mark.parametrize("task", [None, "count", "mnist-16shot", "mnist@blur:3", "my_task.v2"])
def test_plain_task_names_pass(task):
    assert DataConfig(task=task).task == task
