"""The house's rules, checked on the source: imports flow one way (config → backbone →
wrap → train → search → retrain → merge → export) with no circle, no job imports another,
and the things that must exist once do — one ``timm.create_model`` call, one atomic
rename, one training loop, one inference loop."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Where each installed package lives in the repository (pyproject.toml's package-dir).
FOLDERS = {"glora.spaces": "spaces", "glora.supernet": "supernet", "glora.search": "search", "glora": "glora"}

#: The layers, lowest first: a module may import its own layer or lower ones, never a later one.
#: The core (spaces, supernet, search: the user-facing folders) sits on the plumbing floor
#: alone; the app (data, backbone, training, stages, jobs) sits on the core.
CORE = ("glora.spaces", "glora.supernet", "glora.search")
LAYERS = [
    ("glora", "glora.run"),
    ("glora.spaces",),
    ("glora.supernet",),
    ("glora.search",),
    ("glora.data", "glora.backbones.packaged"),
    ("glora.backbones",),
    ("glora.training",),
    ("glora.backbones.embedded", "glora.probe"),
    ("glora.stages.config", "glora.stages.setup", "glora.stages.sampling"),
    ("glora.stages.front",),
    ("glora.stages.pretrain",),
    ("glora.stages.train",),
    ("glora.stages.handoff",),
    ("glora.stages.rerank",),
    ("glora.stages.search",),
    ("glora.stages.merge", "glora.stages.export"),
    ("glora.stages.retrain",),
    ("glora.stages.pipeline", "glora.stages.sweep_report", "glora.stages.evaluate"),
    ("glora.api",),
    ("glora.jobs.app",),
    ("glora.jobs",),
]


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Internal modules ``name`` imports (relative imports resolved; names imported from a
    package count as that package's submodule when one exists)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> int:
    best = max((len(prefix), i) for i, group in enumerate(LAYERS) for prefix in group if name == prefix or name.startswith(prefix + "."))
    return best[1]


def test_every_module_has_a_layer_and_none_imports_a_later_one():
    bad = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})" for a, deps in GRAPH.items() for b in deps if _layer(b) > _layer(a)]
    assert not bad, "\n".join(bad)


def test_the_core_imports_nothing_from_the_app_and_the_trainer_nothing_from_glora():
    """spaces / supernet / search use only each other and glora.run; the training loop takes
    parameter groups and a step hook, so it trains any model."""
    app = ("glora.data", "glora.backbones", "glora.training", "glora.stages", "glora.jobs", "glora.backbones.embedded", "glora.probe", "glora.backbones.packaged")
    bad = [f"{a} imports {b}" for a, deps in GRAPH.items() if a.startswith(CORE) for b in deps if b.startswith(app)]
    bad += [f"{a} imports {b}" for a, deps in GRAPH.items() if a.startswith("glora.training") for b in deps if b.startswith((*CORE, "glora.data"))]
    assert not bad, "\n".join(bad)


def test_the_import_graph_has_no_circle():
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in GRAPH[node]:
            if state.get(dep) == 1:
                pytest.fail("import circle: " + " -> ".join([*trail[trail.index(dep):], dep]))
            if dep not in state:
                visit(dep, [*trail, dep])
        state[node] = 2

    for name in GRAPH:
        if name not in state:
            visit(name, [name])


def test_no_job_imports_another_job_and_the_library_imports_no_hydra():
    jobs = {n for n in GRAPH if n.startswith("glora.jobs.") and n != "glora.jobs.app"}
    assert jobs == {f"glora.jobs.{j}" for j in ("pretrain", "train", "search", "retrain", "pipeline", "sweep_report", "evaluate")}
    for job in jobs:
        assert not GRAPH[job] & jobs, f"{job} imports {GRAPH[job] & jobs}"
    for name, path in MODULES.items():
        if not name.startswith("glora.jobs"):
            assert not re.search(r"^\s*(import|from)\s+hydra\b", path.read_text(), re.M), f"{name} imports hydra"


def _call_sites(pattern: str) -> list[str]:
    return [f"{name}:{i}" for name, path in MODULES.items() for i, line in enumerate(path.read_text().splitlines(), 1)
            if re.search(pattern, line) and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("what, pattern, home", [
    ("timm.create_model call", r"timm\.create_model\(", "glora.backbones.load"),
    ("atomic rename", r"os\.replace\(|\.replace\(.*\.tmp|shutil\.move\(|os\.rename\(", "glora.run.io"),
    ("training loop (backward pass)", r"\.backward\(", "glora.training.loop"),
    ("optimizer step", r"optimizer\.step\(", "glora.training.loop"),
    ("inference loop (a for statement over eval batches)", r"^\s*for .* in (batches|loader)\b", "glora.training.inference"),
])
def test_one_home_each(what, pattern, home):
    sites = _call_sites(pattern)
    assert sites and all(s.startswith(home + ":") for s in sites), f"{what} outside {home}: {sites}"
    assert len(sites) == 1, f"more than one {what}: {sites}"


def test_every_package_is_installed():
    """A wheel holds only the packages pyproject.toml lists: a package folder left out
    imports in an editable checkout and is missing from an installed one."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
