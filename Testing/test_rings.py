"""The repository's rings import inward only, no modules import each other in a circle, and the product's command
line runs without the research ring."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = REPO / "Speckle2SelfSlicer"
ALLOWED = {1: {1}, 2: {1, 2}, 3: {1, 3}, 4: {1, 3, 4}}
"""Rings each ring may import: the product core (1), the research ring (2, imported by itself only: never
shipped), the Qt-free Slicer logic (3) and the front ends (4: the Slicer module and the browser page)."""


def ring(module: str) -> int:
    if module.startswith("speckle2self.bench"):
        return 2
    if module.startswith("speckle2self"):
        return 1
    if module.startswith("Speckle2SelfSlicerLib"):
        return 3
    return 4


def modules() -> dict[str, Path]:
    """Every Python module of the repository's packages and the Slicer module file, by dotted name."""
    found = {}
    for path in SOURCES.rglob("*.py"):
        if "__pycache__" in path.parts or ".egg-info" in str(path):
            continue
        parts = path.relative_to(SOURCES).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The repository modules `name` imports anywhere in its file (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in known and target != name}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_every_ring_imports_inward_only():
    edges = graph()
    assert {"speckle2self.cli", "speckle2self.bench.commands", "Speckle2SelfSlicerLib.logic",
            "Speckle2SelfSlicer", "Speckle2SelfViewer.page"} <= set(edges)
    outward = sorted((importer, imported) for importer, targets in edges.items() for imported in targets
                     if ring(imported) not in ALLOWED[ring(importer)])
    assert not outward


def test_no_modules_import_each_other_in_a_circle():
    assert not circles(graph())


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_command_line_runs_without_the_research_ring(tmp_path):
    """With speckle2self.bench unimportable (the Slicer extension does not ship it), the product's commands work
    and the research ring's are absent; with it, they are registered."""
    blocked = ("import sys; sys.modules['speckle2self.bench'] = None; from speckle2self.cli import main; "
               "sys.exit(main(sys.argv[1:]))")
    listing = subprocess.run([sys.executable, "-c", blocked, "--help"], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    assert "despeckle" in listing.stdout and "bench-speed" not in listing.stdout
    out = tmp_path / "out.nrrd"
    run = subprocess.run([sys.executable, "-c", blocked, "despeckle", str(SOURCES / "Resources" / "SampleData" /
                          "BkCurvilinearScanConvertedData.nrrd"), "-o", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.is_file()
    full = subprocess.run([sys.executable, "-m", "speckle2self", "--help"], capture_output=True, text=True)
    assert all(command in full.stdout for command in ("bench-speed", "simulate", "ablation", "view"))
