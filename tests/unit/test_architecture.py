"""The package's import graph, read from the source (imports inside functions included): no cycle, no import
that runs back up a layer, no import of a top-level script, and no ``sys.path`` manipulation anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "inspectkit"

#: Every package's layer: a module may import modules of its own package or of a lower layer, never of a higher
#: one. docs/architecture.md draws the same table.
LAYERS = {
    "inspectkit": 0,  # the small core: verdicts, limits, metrics, review, preprocess, model, guard, drift, ...
    "inspectkit.data": 1,
    "inspectkit.heatmap": 1,
    "inspectkit.inference": 2,
    "inspectkit.engine": 3,
    "inspectkit.batch": 3,
    "inspectkit.serve": 4,
    "inspectkit.ui.common": 5,
    "inspectkit.ui.adapt": 6,
    "inspectkit.ui": 7,
    "inspectkit.cli": 8,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rsplit(".", 1)[0]


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (function bodies too)."""
    me = module_name(path)
    base = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                mod = f"{anchor}.{node.module}" if node.module else anchor
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known}
    return {m for m in out if m in known} | {m for m in out if not m.startswith("inspectkit")}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports(p, known) for m, p in mods.items()}


def test_every_package_has_a_layer():
    packages = {package_of(m, p.name == "__init__.py") for m, p in modules().items()}
    assert packages == set(LAYERS)


def test_no_import_runs_back_up_a_layer(graph):
    mods = modules()
    wrong = []
    for m, deps in graph.items():
        own = package_of(m, mods[m].name == "__init__.py")
        for d in deps:
            if d not in mods:
                continue
            theirs = package_of(d, mods[d].name == "__init__.py")
            if theirs != own and LAYERS[theirs] >= LAYERS[own]:
                wrong.append(f"{m} (layer {LAYERS[own]}) imports {d} (layer {LAYERS[theirs]})")
    assert not wrong, "\n".join(wrong)


def test_the_import_graph_has_no_cycle(graph):
    mods = set(graph)
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph[m] & mods):
            if d == m:
                continue
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(mods):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_the_package_never_imports_a_top_level_file(graph):
    tops = {p.stem for p in REPO.glob("*.py")}
    wrong = {f"{m} imports {d}" for m, deps in graph.items() for d in deps if d.split(".")[0] in tops}
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize("folder", ["inspectkit", "tests", "benchmarks"])
def test_nothing_edits_sys_path(folder):
    hits = [f"{p.relative_to(REPO)}:{i}" for p in sorted((REPO / folder).rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if "sys.path." in line and "sys.path.(" not in line and not line.lstrip().startswith("#")
            and "test_nothing_edits_sys_path" not in p.read_text()]
    assert not hits, hits
