"""The inliner on a fake package: order, rewrites, equivalence, and clear refusals."""

import pytest

from notebooks.inline import InlineError, check_name_clashes, inline_closure
from tests.notebooks.fakes import package_imports


def closure(pkg, entry="methods/quick.py", entry_name="fakekit.methods.quick"):
    return inline_closure(pkg / entry, package="fakekit", package_dir=pkg, entry_name=entry_name)


def test_dependencies_come_first(fakekit):
    names = [m.name for m in closure(fakekit)]
    assert names == ["fakekit.loop", "fakekit.helpers", "fakekit.registry",
                     "fakekit.methods.quick"]


def test_package_imports_are_rewritten(fakekit):
    modules = {m.name: m.source for m in closure(fakekit)}
    quick = modules["fakekit.methods.quick"]
    assert "# inlined: from ..helpers import double" in quick
    assert "FACTOR = SCALE  # inlined" in quick
    assert 'helpers = inlined_module(\'fakekit.helpers\', [' in quick
    assert "pass  # inlined: from fakekit.loop import scaled" in quick  # inside a function
    assert "_scaled = scaled  # inlined" in modules["fakekit.helpers"]
    assert "__main__" not in modules["fakekit.loop"]
    for source in modules.values():
        assert not package_imports(source)


def test_inlined_code_behaves_like_the_package(fakekit):
    import types

    namespace = {"inlined_module": lambda name, names: types.SimpleNamespace(
        **{n: namespace[n] for n in names})}
    for module in closure(fakekit):
        exec(compile(module.source, module.name, "exec"), namespace)
    import fakekit.methods.quick as real

    assert namespace["quick"](3.0) == real.quick(3.0) == 6.0 + 2.0 + 2.0 + 0.0
    assert set(namespace["METHODS"]) == {"quick"}


def test_standalone_file_imports_package_by_name(fakekit, tmp_path):
    user = tmp_path / "mine.py"
    user.write_text("from fakekit.loop import scaled\n\n\ndef unlearning(*a):\n    return 1\n")
    modules = inline_closure(user, package="fakekit", package_dir=fakekit)
    assert [m.name for m in modules] == ["fakekit.loop", "mine.py"]


@pytest.mark.parametrize(("source", "message"), [
    ("import pandas\n", "cannot inline `pandas`"),
    ("from sklearn.linear_model import LogisticRegression\n", "cannot inline `sklearn`"),
    ("from local_eval.data import setup\n", "local evaluator is not part of a submission"),
    ("import fakekit.loop\n", "binds the package name"),
    ("from fakekit.nowhere import x\n", "has no source file"),
    ("from fakekit.loop import missing_name\n", "defines no top-level name 'missing_name'"),
    ("import importlib\nm = importlib.import_module('fakekit.loop')\n", "dynamic imports"),
    ("import os; from fakekit.loop import scaled\n", "on a line of its own"),
    ("def f(:\n", "not valid Python"),
])
def test_refuses_what_cannot_be_inlined(fakekit, tmp_path, source, message):
    user = tmp_path / "mine.py"
    user.write_text(source)
    with pytest.raises(InlineError, match=message):
        inline_closure(user, package="fakekit", package_dir=fakekit)


def test_refuses_unresolvable_relative_imports(fakekit, tmp_path):
    user = tmp_path / "mine.py"
    user.write_text("from .helpers import double\n")
    with pytest.raises(InlineError, match="relative import in a standalone file"):
        inline_closure(user, package="fakekit", package_dir=fakekit)
    (fakekit / "deep.py").write_text("from ...elsewhere import x\n")
    with pytest.raises(InlineError, match="beyond the top-level package"):
        closure(fakekit, "deep.py", "fakekit.deep")


def test_helper_importing_a_third_party_package_fails(fakekit):
    (fakekit / "loop.py").write_text("import scipy.special\n\n\ndef scaled(x):\n    return x\n")
    with pytest.raises(InlineError, match=r"fakekit.loop line 1: cannot inline `scipy`"):
        closure(fakekit)


def test_name_clashes_are_detected_but_identical_bindings_allowed(fakekit):
    modules = closure(fakekit)
    check_name_clashes([(m.name, m.names) for m in modules])  # torch, math... imported alike
    (fakekit / "registry.py").write_text(
        (fakekit / "registry.py").read_text() + "\n\ndef double(x):\n    return 2 * x\n")
    modules = closure(fakekit)
    with pytest.raises(InlineError, match=r"'double' \(fakekit.helpers, fakekit.registry"):
        check_name_clashes([(m.name, m.names) for m in modules])
