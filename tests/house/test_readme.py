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
