"""glora.train_supernet / search_layout / retrain / merge on a user's own model and DataLoaders:
the stages the jobs run, without Hydra or files; bad loaders, models and budgets are one
clear error each."""
import pytest
import torch
from conftest import make_vit
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import glora
from glora.api import LoaderError
from glora.run.errors import ConfigError, JobError
from glora.search import BudgetError
from glora.spaces import Layout, Space, SpaceError
from glora.supernet import glora_layers, is_wrapped, merge

COLOURS = torch.randn(5, 3, generator=torch.Generator().manual_seed(42))


def task(n=256, seed=0):
    """Noisy images whose class is their tint (one fixed colour per class): learnable, so training must help."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(COLOURS), (n,), generator=gen)
    images = torch.randn(n, 3, 32, 32, generator=gen) + COLOURS[labels][:, :, None, None]
    return TensorDataset(images, labels)


def loaders(batch=32):
    return DataLoader(task(seed=0), batch_size=batch, shuffle=True), DataLoader(task(seed=1), batch_size=64)


def accuracy(model, loader):
    model.eval()
    with torch.no_grad():
        right = sum((model(x).argmax(-1) == y).sum().item() for x, y in loader)
    return right / len(loader.dataset)


def test_train_search_retrain_merge_on_a_timm_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, val = loaders()
    space = Space.preset("small")
    rows = []
    supernet = glora.train_supernet(make_vit(), space, train, val, epochs=3, lr=3e-3, on_epoch_end=rows.append)
    assert is_wrapped(supernet) and all(layer.choice is None for layer in glora_layers(supernet).values())
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all("val/acc" in r for r in rows)
    result = glora.search_layout(supernet, val, budget=3000, population=6, generations=2, progress=False)
    assert result.trainable_params == result.layout.trainable_params <= 3000 and len(result.history) == len(result.records) >= 6
    assert result.val_acc == result.history["val_acc"].max() == result.layout.metrics["val_acc"]
    before = accuracy(make_vit(), val)
    tuned = glora.retrain(make_vit(), result.layout, train, val, epochs=3, lr=3e-3)
    after = accuracy(tuned, val)
    assert after > before + 0.5, (before, after)
    x = next(iter(val))[0]
    with torch.no_grad():
        unmerged = tuned(x)
        plain = glora.merge(tuned)
        assert type(plain.blocks[0].attn.qkv) is nn.Linear and (plain(x) - unmerged).abs().max() <= 1e-4
    assert list(tmp_path.iterdir()) == []  # no directory given: nothing written


def test_budgets_give_one_search_each_and_seeds_repeat():
    train, val = loaders()
    space = Space.preset("small")
    supernet = glora.train_supernet(make_vit(), space, train, val, epochs=1, seed=3)
    results = glora.search_layout(supernet, val, budgets=[1500, 4000], population=4, generations=1, progress=False)
    assert [r.budget for r in results] == [1500, 4000] and all(r.trainable_params <= r.budget for r in results)
    again = glora.train_supernet(make_vit(), space, train, val, epochs=1, seed=3)  # seeds torch: the same shuffles
    one = glora.search_layout(again, val, budget=1500, population=4, generations=1, progress=False)
    assert one.layout.hash == results[0].layout.hash


def test_any_module_with_linear_layers(tmp_path):
    """A plain MLP (no timm): its Linear layers are targeted by name, the last one trains as the head."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))
    space = Space(ranks=(4, 2), targets=r"[13]")
    train, val = loaders()
    supernet = glora.train_supernet(mlp, space, train, val, epochs=2, lr=3e-3, modules_to_train=("5",), run_dir=tmp_path / "sn")
    assert sorted(glora_layers(supernet)) == ["1", "3"] and (tmp_path / "sn" / "supernet.safetensors").is_file()
    result = glora.search_layout(supernet, val, budget=2000, population=4, generations=2, progress=False, run_dir=tmp_path / "search")
    assert Layout.load(tmp_path / "search" / "layout-2000.json").hash == result.layout.hash
    torch.manual_seed(0)
    fresh = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))
    tuned = glora.retrain(fresh, Layout.load(tmp_path / "search" / "layout-2000.json"), train, val, epochs=5, lr=1e-2, modules_to_train=("5",))
    assert accuracy(tuned, val) > 0.5
    x = next(iter(val))[0]
    with torch.no_grad():
        unmerged = tuned(x)
        assert (merge(tuned)(x) - unmerged).abs().max() <= 1e-4


class Dicts(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"pixel_values": torch.zeros(3, 32, 32), "label": 0}


@pytest.mark.parametrize("loader, match", [
    (DataLoader(Dicts(), batch_size=2), r"train_loader yields a dict of 2, not \(images, labels\)"),
    (DataLoader(TensorDataset(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)), batch_size=2),
     r"train_loader: images are Tensor of torch.uint8, not a float tensor; add transforms.ToTensor"),
    (DataLoader(TensorDataset(torch.zeros(4, 3, 32, 32), torch.zeros(4)), batch_size=2), r"train_loader: labels are Tensor of torch.float32.*class indices"),
    (DataLoader(TensorDataset(torch.zeros(4, 3, 32, 32)), batch_size=2), r"yields a list of 1, not \(images, labels\)"),
    (DataLoader(TensorDataset(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long)), batch_size=2), r"train_loader is empty"),
    ([1, 2], r"train_loader yields a int, not \(images, labels\)"),
])
def test_a_loader_that_does_not_yield_images_and_labels(loader, match):
    model = make_vit()
    with pytest.raises(LoaderError, match=match):
        glora.train_supernet(model, Space.preset("small"), loader, epochs=1)
    assert not is_wrapped(model)  # refused before the model was touched


def test_bad_models_and_budgets():
    train, val = loaders()
    convnet = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(SpaceError, match="matches no nn.Linear or 1x1 conv"):
        glora.train_supernet(convnet, Space.preset("small"), train, epochs=1)
    floor = Space(ranks=(2,), options={"A": ("vector",), "B": ("lora", "none"), "C": ("none",), "D": ("none",), "E": ("none",)})
    supernet = glora.train_supernet(make_vit(), floor, train, val, epochs=1)
    with pytest.raises(BudgetError, match=r"^budget=100 is infeasible: the smallest layout of this space has \d+ trainable params; raise budget"):
        glora.search_layout(supernet, val, budget=100, population=4, generations=1, progress=False)
    with pytest.raises(ConfigError, match="give exactly one"):
        glora.search_layout(supernet, val, budget=100, budgets=[200])
    with pytest.raises(ConfigError, match="budget.*positive, finite"):
        glora.search_layout(supernet, val, budgets=[float("inf")])
    with pytest.raises(ConfigError, match="modules_to_train.*'nope'"):
        glora.train_supernet(make_vit(), Space.preset("small"), train, modules_to_train=("nope",), epochs=1)
    with pytest.raises(ConfigError, match="backbone.*plain pretrained backbone"):
        glora.retrain(supernet, Layout.sample(supernet, floor, seed=0), train, epochs=1)
    assert issubclass(ConfigError, JobError)


def test_run_dir_checkpoints_and_a_rerun_resumes(tmp_path):
    """With run_dir, each epoch is checkpointed; the same call again resumes instead of retraining."""
    train, val = loaders()
    rows = []
    first = glora.train_supernet(make_vit(), Space.preset("small"), train, val, epochs=2, lr=3e-3, run_dir=tmp_path)
    again = glora.train_supernet(make_vit(), Space.preset("small"), train, val, epochs=2, lr=3e-3, run_dir=tmp_path, on_epoch_end=rows.append,
                                 seed=1)  # another seed would train other weights: equal ones were restored
    assert rows == []  # both epochs were done: nothing trained twice
    ours, theirs = first.state_dict(), again.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    fresh = glora.train_supernet(make_vit(), Space.preset("small"), train, val, epochs=2, lr=3e-3, seed=1)
    assert not all(torch.equal(ours[k], v) for k, v in fresh.state_dict().items())  # the restore did something
