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
