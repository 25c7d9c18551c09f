"""Building notebooks: every registered method, provenance, and clear build failures."""

import ast

import nbformat
import pytest

import submission
from notebooks import BuildError, build_kaggle_notebook
from notebooks.__main__ import main
from tests.notebooks.fakes import package_imports


def code_cells(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def assert_self_contained(nb):
    for source in code_cells(nb):
        ast.parse(source)  # every cell is valid Python on its own
        assert not package_imports(source, "submission")
        assert not package_imports(source, "local_eval")


@pytest.mark.parametrize("method", sorted(submission.METHODS))
def test_builds_every_registered_method(method):
    nb = build_kaggle_notebook(method=method)
    nbformat.validate(nb)
    assert_self_contained(nb)
    provenance = nb.metadata["unlearning_kit"]
    module = submission.get_method(method).__module__
    assert list(provenance["inlined"])[-1] == module
    assert provenance["method"] == method
    sources = code_cells(nb)
    assert any(s.startswith(f"# Inlined from {module.replace('.', '/')}.py") for s in sources)
    assert "def unlearning(net, retain_loader, forget_loader, val_loader, budget_s=None)" in (
        sources[-2])
    assert sources[-1].endswith("run_all(unlearning)")


def test_header_records_the_version():
    nb = build_kaggle_notebook(method="finetune", method_kwargs={"lr": 0.01})
    header = nb.cells[0].source
    assert "`finetune`" in header and "`submission/methods/finetune.py`" in header
    provenance = nb.metadata["unlearning_kit"]
    if provenance["git_commit"]:
        assert provenance["git_commit"][:12] in header
    assert provenance["method_kwargs"] == {"lr": 0.01}
    assert "METHOD_KWARGS = {'lr': 0.01}" in code_cells(nb)[-2]


def test_method_from_a_fake_registry(fakekit):
    nb = build_kaggle_notebook(method="quick", package="fakekit")
    assert_self_contained(nb)
    assert not any(package_imports(s) for s in code_cells(nb))
    assert list(nb.metadata["unlearning_kit"]["inlined"]) == [
        "fakekit.loop", "fakekit.helpers", "fakekit.registry", "fakekit.methods.quick"]
    # `from .. import helpers` needs the namespace helper, defined before the modules.
    assert any("def inlined_module(name, names):" in s for s in code_cells(nb))


def test_method_whose_helpers_cannot_be_inlined_fails(fakekit):
    (fakekit / "helpers.py").write_text("import pandas\n\n\ndef double(x):\n    return x\n")
    with pytest.raises(BuildError, match=r"fakekit.helpers line 1: cannot inline `pandas`"):
        build_kaggle_notebook(method="quick", package="fakekit")


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(BuildError, match=r"unknown method 'nope'.*finetune"):
        build_kaggle_notebook(method="nope")


def test_submission_file_must_define_unlearning(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("def forget(net):\n    pass\n")
    with pytest.raises(BuildError, match="defines no top-level `unlearning"):
        build_kaggle_notebook(submission_file=path)


def test_submission_file_clashing_with_the_template_fails(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("DEVICE = 'cuda'\n\n\ndef unlearning(net, r, f, v):\n    pass\n")
    with pytest.raises(BuildError, match=r"'DEVICE' \(the notebook template, mine.py\)"):
        build_kaggle_notebook(submission_file=path)


def test_submission_file_using_kit_helpers(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("from submission.helpers import frozen_copy\n\n\n"
                    "def unlearning(net, r, f, v, budget_s=None):\n    frozen_copy(net)\n")
    nb = build_kaggle_notebook(submission_file=path)
    assert_self_contained(nb)
    assert list(nb.metadata["unlearning_kit"]["inlined"]) == ["submission.helpers", "mine.py"]


def test_cli_writes_a_notebook_or_fails_clearly(tmp_path, capsys):
    out = tmp_path / "nb" / "finetune.ipynb"
    assert main(["build", "--method", "finetune", "--hp", "epochs=2", "--out", str(out)]) == 0
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata["unlearning_kit"]["method_kwargs"] == {"epochs": 2}
    old_name = tmp_path / "nb" / "set.ipynb"  # --set, the option's earlier name, still works
    assert main(["build", "--method", "finetune", "--set", "lr=0.01", "--out", str(old_name)]) == 0
    assert nbformat.read(old_name, as_version=4).metadata["unlearning_kit"]["method_kwargs"] == {
        "lr": 0.01}  # fmt: skip
    typo = tmp_path / "nb" / "typo.ipynb"
    assert main(["build", "--method", "finetune", "--hp", "epochs=two", "--out", str(typo)]) == 2
    assert "finetune's epochs takes int" in capsys.readouterr().err and not typo.exists()
    bad = tmp_path / "bad.py"
    bad.write_text("import pandas\n\n\ndef unlearning(net, r, f, v):\n    pass\n")
    failed = tmp_path / "bad.ipynb"
    assert main(["build", "--submission", str(bad), "--out", str(failed)]) == 2
    assert "cannot inline `pandas`" in capsys.readouterr().err
    assert not failed.exists()


def test_method_function_named_unlearning_is_wrapped_not_shadowed(fakekit):
    (fakekit / "methods" / "other.py").write_text(
        "from ..registry import register\n\n\n@register('other')\n"
        "def unlearning(net, r, f, v, *, budget_s=None):\n    return net\n")
    (fakekit / "methods" / "__init__.py").write_text("from . import other, quick  # noqa\n")
    nb = build_kaggle_notebook(method="other", package="fakekit")
    entry = code_cells(nb)[-2]
    assert "kit_method = unlearning" in entry
    assert "    kit_method(net, retain_loader, forget_loader, val_loader, budget_s=" in entry


def test_without_a_method_the_kits_default_is_built(tmp_path, capsys):
    from notebooks.__main__ import main
    from submission import DEFAULT_METHOD

    assert main(["build", "--out", str(tmp_path / "default.ipynb")]) == 0
    assert f"method {DEFAULT_METHOD};" in capsys.readouterr().out
    nb = nbformat.read(tmp_path / "default.ipynb", as_version=4)
    assert nb.metadata["unlearning_kit"]["method"] == DEFAULT_METHOD
    assert any(f"def {DEFAULT_METHOD}(" in c.source for c in nb.cells if c.cell_type == "code")
