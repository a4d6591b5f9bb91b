"""The README's Python API example runs as written (in a scratch dir)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    block = re.search(r"## Python API.*?```python\n(.*?)```", text, re.S).group(1)
    assert "from glora.spaces import" in block and "merge(model)" in block
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert (tmp_path / "best.json").is_file()
    plain, layout = scope["plain"], scope["layout"]
    assert type(plain.blocks[0].attn.qkv).__name__ == "Linear" and layout.trainable_params > 0


def test_readme_adapter_example_runs(tmp_path, monkeypatch):
    """The adapter workflow: save, load onto a fresh backbone, merge — the same model."""
    import torch

    text = README.read_text()
    block = re.search(r"### The adapter apart from the backbone.*?```python\n(.*?)```", text, re.S).group(1)
    assert "load_adapter(model," in block and "merge(model)" in block
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (scope["plain"].eval()(x) - scope["tuned"].eval()(x)).abs().max() <= 1e-4
