"""Layers the import-linter contracts (pyproject.toml) cannot see: no module imports another
module's private names, and the contracts themselves hold and catch a violation."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("submission", "submission_tools", "local_eval", "notebooks", "data_stubs", "bench")


def private_imports(path: Path) -> list[str]:
    """``from M import _name`` of a kit module M (absolute or relative) in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        ours = node.level > 0 or (node.module or "").split(".")[0] in PACKAGES
        for alias in node.names:
            if ours and alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{path}:{node.lineno} {alias.name}")
    return found


def test_no_module_imports_another_modules_private_names():
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    assert len(files) > 50
    assert [hit for p in files for hit in private_imports(p)] == []


def test_the_checker_catches_a_private_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from local_eval.training.train import _x\nfrom .y import _z, w\n")
    found = private_imports(bad)
    assert [line.split()[-1] for line in found] == ["_x", "_z"]


def test_import_contracts_hold_and_catch_a_violation(tmp_path):
    """import-linter is in requirements.txt; its command sits beside this Python."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "lint-imports not found: pip install -r requirements.txt"
    kept = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0, kept.stdout[-2000:]
    # The same tree with one import pointing the wrong way: the evaluator importing the runner.
    copy = tmp_path / "kit"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", copy)
    target = copy / "local_eval" / "scoring" / "sanity.py"
    target.write_text(target.read_text() + "\nfrom submission_tools.run import job  # noqa\n")
    broken = subprocess.run([lint], cwd=copy, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1
    assert "local_eval.scoring.sanity -> submission_tools.run.job" in broken.stdout
