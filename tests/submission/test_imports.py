"""``submission`` gets inlined into Kaggle notebooks: only torch, numpy and the standard library
(run.py and profile.py, the command-line tools, may also use local_eval and tqdm)."""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "submission"
TOOLS = {"run.py", "profile.py"}
ALLOWED = {"torch", "numpy"} | set(sys.stdlib_module_names)


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


LIBRARY = sorted(p for p in PACKAGE.rglob("*.py") if p.name not in TOOLS)


def test_the_library_files_are_found():
    names = {p.name for p in LIBRARY}
    assert {"__init__.py", "loop.py", "helpers.py", "scrub.py"} <= names


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_imports_only_torch_numpy_and_stdlib(path):
    assert imported_roots(path) - ALLOWED == set()


def test_the_checker_catches_a_foreign_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom local_eval.data import load_setup\nfrom . import x\n")
    assert imported_roots(bad) - ALLOWED == {"local_eval"}
