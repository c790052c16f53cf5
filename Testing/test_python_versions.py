"""Issue 27: the package runs on the oldest Python it supports (requires-python >= 3.9), which Slicer 5.6 and 5.8
ship: every file's definitions loaded by a real Python 3.9, annotations evaluated at definition time free of `X | Y`,
and vermin's minimum-version analysis."""
from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKER = Path(__file__).with_name("definitions_check.py")
OLDEST = (3, 9)


def python_files() -> list[Path]:
    """Every Python file of the package: the Slicer module, its logic and the core (the benchmark tooling too)."""
    return sorted(p for p in (REPO / "Speckle2SelfSlicer").rglob("*.py") if "__pycache__" not in p.parts)


def oldest_python() -> str | None:
    """A Python 3.9 interpreter: $PYTHON39, python3.9 on the PATH, pyenv's or Debian's."""
    candidates = [os.environ.get("PYTHON39"), shutil.which("python3.9"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9"))), "/usr/bin/python3.9"]
    for candidate in filter(None, candidates):
        version = subprocess.run([candidate, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                                 text=True)
        if version.returncode == 0 and tuple(map(int, version.stdout.split())) == OLDEST:
            return candidate
    return None


def load_definitions(python: str, paths: list) -> subprocess.CompletedProcess:
    stdlib = ",".join(sorted(sys.stdlib_module_names))
    return subprocess.run([python, "-I", str(CHECKER), stdlib, *map(str, paths)], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def python39() -> str:
    python = oldest_python()
    if python is None:
        pytest.skip("no Python 3.9 interpreter here (set PYTHON39); the annotation and vermin checks still ran")
    return python


def test_every_file_loads_its_definitions_on_python_39(python39):
    result = load_definitions(python39, python_files())
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_python_39_check_catches_what_39_rejects(python39, tmp_path):
    cases = {"annotation.py": "def f() -> str | None:\n    return None\n",
             "alias.py": "from __future__ import annotations\nimport numpy as np\nArray = np.ndarray | None\n",
             "stdlib.py": "from typing import TypeAlias\n",
             "syntax.py": "match 1:\n    case _:\n        pass\n",
             "fine.py": "from __future__ import annotations\nimport slicer\n\n\ndef f(node: slicer.X | None) -> int:\n"
                        "    return 1\n"}
    for name, source in cases.items():
        (tmp_path / name).write_text(source)
    result = load_definitions(python39, [tmp_path / name for name in cases])
    failed = {Path(line.split(":")[0]).name for line in result.stdout.splitlines()}
    assert result.returncode == 1 and failed == set(cases) - {"fine.py"}


def evaluated_annotations(tree: ast.Module) -> list[ast.expr]:
    """The annotations Python evaluates when it runs a file's definitions (the file has no
    `from __future__ import annotations`): of function parameters and returns, and of module and class variables."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                parameters = child.args
                found.extend(a.annotation for a in [*parameters.posonlyargs, *parameters.args, *parameters.kwonlyargs,
                                                    parameters.vararg, parameters.kwarg] if a and a.annotation)
                found.extend([child.returns] if child.returns else [])
            elif isinstance(child, ast.AnnAssign) and not in_function:
                found.append(child.annotation)
            visit(child, isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) or
                  (in_function and not isinstance(child, ast.ClassDef)))

    visit(tree, False)
    return found


def test_no_annotation_evaluated_at_definition_uses_the_union_operator():
    """The check that holds where no Python 3.9 is at hand: `X | Y` needs 3.10 where it is evaluated."""
    checked = 0
    for path in python_files():
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and "annotations" in [a.name for a in n.names]
               for n in tree.body):
            continue
        for annotation in evaluated_annotations(tree):
            checked += 1
            unions = [n for n in ast.walk(annotation) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)]
            assert not unions, f"{path.relative_to(REPO)}:{annotation.lineno}: {ast.unparse(annotation)}"
    assert checked >= 20  # the module file's parameter node fields and methods


def test_the_annotation_check_finds_a_union_where_it_is_evaluated():
    tree = ast.parse("class A:\n    x: int | None\n    def f(self, y: str | None = None) -> bytes | None:\n"
                     "        z: float | None = None\n")
    assert [ast.unparse(a) for a in evaluated_annotations(tree)] == ["int | None", "str | None", "bytes | None"]


def test_vermin_finds_nothing_newer_than_python_39():
    vermin = Path(sys.executable).with_name("vermin")  # its console script: vermin has no __main__
    result = subprocess.run([str(vermin), "--target=3.9-", "--violations", "--no-tips",
                             *map(str, python_files())], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
