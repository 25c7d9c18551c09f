"""The docs name only what exists: every ``*.py`` path, dotted module and linked file in
README.md and docs/architecture.md, and the architecture's tree lists every module."""

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/architecture.md")
PACKAGES = ("submission", "submission_tools", "local_eval", "notebooks", "data_stubs", "bench")
# a dotted name ending in one of these is a file (submission.zip), not a module
FILE_SUFFIXES = {"zip", "ipynb", "py", "pth", "csv", "json", "npz", "npy", "md", "txt", "png"}
DOTTED = re.compile(r"(?<![\w./-])(?:local_eval|submission_tools|submission)(?:\.\w+)+")
PY_PATH = re.compile(r"(?<![\w./<>-])[\w./<>-]+/[\w<>-]+\.py\b")
LINK = re.compile(r"\]\(([^)#\s]+)\)")


def text(name: str) -> str:
    return (ROOT / name).read_text()


def tree_block() -> str:
    """The code block under docs/architecture.md's "## The tree"."""
    after = text("docs/architecture.md").split("## The tree", 1)[1]
    return after.split("```", 2)[1]


def tree_paths() -> list[str]:
    """Every path the tree names, made whole from its indentation (``  run/cli.py`` under
    ``submission_tools/`` is ``submission_tools/run/cli.py``); ``a.py, b.py`` names two."""
    parents: list[tuple[int, str]] = []  # (indent, folder) of the enclosing folders
    paths = []
    for line in tree_block().splitlines():
        if not line.strip() or line.startswith(" " * 20):  # blank, or a description's tail
            continue
        indent = len(line) - len(line.lstrip())
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        while parents and parents[-1][0] >= indent:
            parents.pop()
        prefix = "".join(folder for _, folder in parents)
        for name in names.split(", "):
            paths.append(prefix + name)
        if names.endswith("/") and "," not in names:
            parents.append((indent, names))
    return paths


def test_the_tree_is_read_as_whole_paths():
    paths = tree_paths()
    for path in (
        "submission_tools/run/cli.py",
        "local_eval/training/batched_ops.py",
        "local_eval/common/shard_text.py",
        "submission/methods/<name>.py",
        "submission/run.py",
        "submission/profile.py",
        "bench/scale.py",
        "notebooks/build.py",
    ):
        assert path in paths


def test_every_path_in_the_tree_exists():
    missing = []
    for path in tree_paths():
        if "<" in path:  # a placeholder: at least one file fits it
            if not list(ROOT.glob(re.sub(r"<\w+>", "*", path))):
                missing.append(path)
        elif not (ROOT / path).exists():
            missing.append(path)
    assert missing == [], f"docs/architecture.md names paths that do not exist: {missing}"


def test_the_tree_lists_every_module_of_the_packages():
    named = set()
    for path in tree_paths():
        named.update(p.relative_to(ROOT).as_posix() for p in ROOT.glob(re.sub(r"<\w+>", "*", path)))
    modules = {
        p.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    unlisted = sorted(m for m in modules - named if not m.endswith("/__init__.py"))
    assert unlisted == [], (
        f"modules missing from docs/architecture.md's tree: {unlisted}; add a line for each"
    )


@pytest.mark.parametrize("doc", DOCS)
def test_every_py_path_named_exists(doc):
    prose = text(doc).replace(tree_block(), "")  # the tree's paths are relative: read above
    paths = {p for p in PY_PATH.findall(prose) if "<" not in p}
    assert paths, f"{doc} names no .py path: is the pattern still right?"
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert missing == [], f"{doc} names files that do not exist: {missing}"


def resolves(dotted: str) -> bool:
    """Whether ``a.b.c`` is a module, or a module's attribute (``submission.loop.warm_up``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        if cut == len(parts):
            return True
        obj = importlib.import_module(name)
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS)
def test_every_dotted_module_named_exists(doc):
    names = {
        n for n in DOTTED.findall(text(doc)) if n.rsplit(".", 1)[1].lower() not in FILE_SUFFIXES
    }
    assert len(names) >= 3, f"{doc} names hardly any module: is the pattern still right?"
    missing = sorted(n for n in names if not resolves(n))
    assert missing == [], f"{doc} names modules or attributes that do not exist: {missing}"


def test_the_checks_catch_what_does_not_exist():
    assert resolves("local_eval.scoring.metric")
    assert resolves("submission.loop.warm_up")
    assert resolves("submission_tools.run.cli")
    assert not resolves("local_eval.scoring.builder")
    assert not resolves("submission.loop.no_such_function")
    assert DOTTED.findall("see `local_eval.runs.jobs`, and submission.zip.") == [
        "local_eval.runs.jobs",
        "submission.zip",
    ]
    assert PY_PATH.findall("`notebooks/builder.py` and local_eval/cli/main.py,") == [
        "notebooks/builder.py",
        "local_eval/cli/main.py",
    ]


@pytest.mark.parametrize("doc", DOCS)
def test_every_linked_file_exists(doc):
    links = [link for link in LINK.findall(text(doc)) if "://" not in link]
    base = (ROOT / doc).parent
    missing = [link for link in links if not (base / link).exists()]
    assert missing == [], f"{doc} links to files that do not exist: {missing}"
