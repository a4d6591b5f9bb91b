"""The README's Python API example runs as written (in a scratch dir)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    return re.search(rf"{re.escape(heading)}.*?```python\n(.*?)```", README.read_text(), re.S).group(1)


def run_block(block: str) -> dict:
    """Execute a README block as written; returns the names it defined."""
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    return scope


def test_readme_api_example_runs(tmp_path, monkeypatch):
    block = readme_block("## Python API")
    assert "from glora.spaces import" in block and "merge(model)" in block
    monkeypatch.chdir(tmp_path)
    scope = run_block(block)
    assert (tmp_path / "best.json").is_file()
    plain, layout = scope["plain"], scope["layout"]
    assert type(plain.blocks[0].attn.qkv).__name__ == "Linear" and layout.trainable_params > 0


def test_readme_adapter_example_runs(tmp_path, monkeypatch):
    """The adapter workflow: save, load onto a fresh backbone, merge — the same model."""
    import torch

    block = readme_block("### The adapter apart from the backbone")
    assert "load_adapter(model," in block and "merge(model)" in block
    monkeypatch.chdir(tmp_path)
    scope = run_block(block)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (scope["plain"].eval()(x) - scope["tuned"].eval()(x)).abs().max() <= 1e-4


def test_readme_peft_example_runs(tmp_path, monkeypatch):
    """The PEFT workflow: export, PEFT loads it onto a fresh backbone, and back — the same model."""
    import pytest
    import torch

    pytest.importorskip("peft")
    block = readme_block("### A PEFT adapter")
    assert "to_peft(tuned, layout," in block and "from_peft(ours," in block
    monkeypatch.chdir(tmp_path)
    scope = run_block(block)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = scope["tuned"].eval()(x)
        assert (scope["peft_model"].eval()(x) - want).abs().max() <= 1e-4
        assert (scope["ours"].eval()(x) - want).abs().max() <= 1e-4


def test_readme_dataloader_example_runs(tmp_path, monkeypatch):
    """The no-Hydra API on a torchvision ImageFolder the test makes: train, search, retrain, merge."""
    import numpy as np
    import torch
    from PIL import Image

    block = readme_block("### Your own model and DataLoaders, no Hydra")
    assert "glora.train_supernet(" in block and "glora.search_layout(" in block and "glora.merge(tuned)" in block
    rng = np.random.default_rng(0)
    tints = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
    for split, count in (("train", 12), ("val", 6)):
        for name, tint in tints.items():
            folder = tmp_path / "my-images" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(tint, 40, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    scope = run_block(block)
    assert (tmp_path / "layout.json").is_file() and scope["result"].layout.trainable_params <= 5000
    x = next(iter(scope["val"]))[0]
    assert type(scope["plain"].blocks[0].attn.qkv).__name__ == "Linear"
    with torch.no_grad():
        assert (scope["plain"](x).argmax(-1) == next(iter(scope["val"]))[1]).float().mean() > 0.5
