"""Shifted test sets (data.shift): every shift changes the test images and more so at a
higher severity, keeps the labels, leaves train and val alone, and is the same image for
image for the same seed, in memory and from files."""
import numpy as np
import pytest
import torch
from PIL import Image

from glora.data import DataConfig, Preprocess, build_task
from glora.data.shifts import SHIFTS, Shift, parse_shift, shift_images
from glora.run.errors import ConfigError

PRE = Preprocess(28)


@pytest.fixture(scope="module")
def clean():
    return build_task(DataConfig(task="sklearn_digits"), PRE)


def _test_split(shift: str, seed: int = 0):
    return build_task(DataConfig(task="sklearn_digits", shift=shift, split_seed=seed), PRE)


@pytest.mark.parametrize("name", sorted(SHIFTS))
def test_each_shift_changes_the_test_images_keeps_labels_and_repeats_for_a_seed(clean, name):
    mild, severe, again = _test_split(f"{name}:1"), _test_split(f"{name}:5"), _test_split(f"{name}:5")
    x, y = clean.splits["test"].tensors
    change = {s: (task.splits["test"].tensors[0] - x).abs().mean().item() for s, task in ((1, mild), (5, severe))}
    assert change[1] > 0.005 and change[5] > 1.5 * change[1], change
    assert torch.equal(severe.splits["test"].tensors[1], y)
    assert torch.equal(severe.splits["test"].tensors[0], again.splits["test"].tensors[0])
    for split in ("train", "val"):
        assert torch.equal(severe.splits[split].tensors[0], clean.splits[split].tensors[0])
    assert severe.name == f"sklearn_digits-{name}5"


@pytest.mark.parametrize("name", ["gaussian_noise", "rotation", "elastic"])
def test_random_shifts_draw_anew_for_another_seed(name):
    images = torch.rand(4, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.equal(shift_images(images, Shift(name, 4), 0), shift_images(images, Shift(name, 4), 0))
    assert not torch.equal(shift_images(images, Shift(name, 4), 0), shift_images(images, Shift(name, 4), 1))


def test_full_inversion_is_the_negative():
    images = torch.rand(2, 3, 8, 8)
    assert torch.allclose(shift_images(images, Shift("inversion", 5), 0), 1 - images)


def test_a_folder_is_shifted_image_by_image_like_memory(tmp_path):
    """Files are shifted on access with image i's own generator: the same pixels as shifting
    the decoded, un-normalised test images at once."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for c in ("a", "b"):
            for i in range(3):
                (tmp_path / split / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / split / c / f"{i}.png")
    cfg = DataConfig(source="imagefolder", root=str(tmp_path))
    pre = Preprocess(12)
    clean = build_task(cfg, pre).splits["test"]
    shifted = build_task(DataConfig(source="imagefolder", root=str(tmp_path), shift="elastic:4"), pre).splits["test"]
    raw = torch.stack([clean[i][0] for i in range(len(clean))]) * 0.5 + 0.5
    want = (shift_images(raw, Shift("elastic", 4), 0) - 0.5) / 0.5
    got = torch.stack([shifted[i][0] for i in range(len(shifted))])
    assert torch.allclose(got, want, atol=1e-6) and [shifted[i][1] for i in range(6)] == [clean[i][1] for i in range(6)]


@pytest.mark.parametrize("text, says", [("fog", "the shifts are"), ("blur:9", "a severity is a whole number 1..5"),
                                        ("blur:x", "a severity is a whole number 1..5"), ("blur:", None)])
def test_a_bad_shift_is_one_config_error(text, says):
    if says is None:
        assert parse_shift(text) == Shift("blur", 3)  # no severity: 3
        return
    with pytest.raises(ConfigError, match=rf"^data.shift='{text}' cannot work: {says}"):
        DataConfig(shift=text)
