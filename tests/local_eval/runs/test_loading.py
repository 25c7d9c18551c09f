import inspect
import json
import re
import textwrap

import pytest

from local_eval.common.errors import UsageError
from local_eval.runs.loading import load_unlearning, notebook_definitions, parse_hyperparameters


def write_notebook(path, *cells, markdown=("# title",)):
    nb = {
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": list(markdown)}]
        + [
            {
                "cell_type": "code",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": textwrap.dedent(c).splitlines(keepends=True),
            }
            for c in cells
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))
    return path


KAGGLE_LIKE = [
    """
    %matplotlib inline
    !pip install nothing
    import os
    import torch
    from torch import nn
    DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
    LR = 1e-3
    EPOCHS = 2 * 3
    print('running on', DEVICE)
    """,
    """
    ORIGINAL = torch.load('/kaggle/input/neurips-2023-machine-unlearning/original_model.pth')
    net = nn.Linear(2, 2)
    os.makedirs('/kaggle/tmp', exist_ok=True)
    """,
    """
    def unlearning(net, retain_loader, forget_loader, val_loader):
        net.tag = (LR, EPOCHS)
        net.eval()
    """,
    """
    if os.path.exists('/kaggle/input/neurips-2023-machine-unlearning/empty.txt'):
        raise SystemExit('mock mode')
    for i in range(512):
        unlearning(net, None, None, None)
        torch.save(net.state_dict(), f'/kaggle/tmp/unlearned_checkpoint_{i}.pth')
    if __name__ == '__main__':
        raise RuntimeError('never')
    """,
]


def test_notebook_rule_runs_definitions_only(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", *KAGGLE_LIKE)
    namespace, notes = notebook_definitions(path)
    assert namespace["LR"] == 1e-3 and namespace["EPOCHS"] == 6
    assert namespace["DEVICE"] in ("cpu", "cuda")
    assert "net" not in namespace  # an assignment that calls something is skipped
    assert "ORIGINAL" not in namespace
    assert len(notes) == 1 and "cell 3, line 2" in notes[0] and "skipped" in notes[0]
    assert not (tmp_path / "kaggle").exists()

    loaded = load_unlearning(notebook=path)
    assert loaded.source == f"notebook:{path}"
    assert not loaded.accepts_budget
    import torch

    net = torch.nn.Linear(2, 2)
    loaded(net, None, None, None, budget_s=5.0)  # budget dropped for the 4-argument form
    assert net.tag == (1e-3, 6)


def test_notebook_try_import_block_runs(tmp_path):
    path = write_notebook(
        tmp_path / "nb.ipynb",
        """
        try:
            import tqdm
        except ImportError:
            tqdm = None
        def unlearning(net, r, f, v):
            return net
        """,
    )
    namespace, _ = notebook_definitions(path)
    assert namespace["tqdm"] is not None


def test_notebook_without_unlearning(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", "def helper():\n    pass\n")
    with pytest.raises(ValueError, match=r"defines no function 'unlearning'.*helper"):
        load_unlearning(notebook=path)


def test_notebook_syntax_error_and_not_a_notebook(tmp_path):
    with pytest.raises(ValueError, match=r"cell 2, line 1: syntax error"):
        load_unlearning(notebook=write_notebook(tmp_path / "a.ipynb", "def (:\n"))
    (tmp_path / "b.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="not a Jupyter notebook"):
        load_unlearning(notebook=tmp_path / "b.ipynb")
    with pytest.raises(ValueError, match="notebook not found"):
        load_unlearning(notebook=tmp_path / "c.ipynb")


def test_notebook_failing_import_is_an_error(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", "import no_such_module_xyz\n")
    with pytest.raises(ValueError, match="ModuleNotFoundError"):
        load_unlearning(notebook=path)


def test_submission_file(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        textwrap.dedent("""
        CALLS = []
        def unlearning(net, retain, forget, val, *, budget_s=None):
            CALLS.append(budget_s)
            return net
        if __name__ == "__main__":
            raise SystemExit("must not run")
    """)
    )
    loaded = load_unlearning(submission=path)
    assert loaded.accepts_budget and loaded.source == f"file:{path}"
    loaded("net", 1, 2, 3, budget_s=4.0)
    assert loaded.fn.__globals__["CALLS"] == [4.0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def helper(): pass\n", "defines no function 'unlearning'"),
        ("unlearning = 3\n", "is a int, not a function"),
        ("def unlearning(net): pass\n", "cannot be called as unlearning"),
        ("raise RuntimeError('boom')\n", "importing .* raised RuntimeError: boom"),
        ("def unlearning(:\n", "syntax error"),
    ],
)
def test_bad_submission_files(tmp_path, body, message):
    path = tmp_path / "bad.py"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        load_unlearning(submission=path)


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(ValueError, match="submission file not found"):
        load_unlearning(submission=tmp_path / "none.py")
    (tmp_path / "x.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="use --notebook"):
        load_unlearning(submission=tmp_path / "x.ipynb")


def test_kit_methods_and_default():
    from submission import DEFAULT_METHOD, METHODS

    assert load_unlearning(method="finetune").fn is METHODS["finetune"]
    default = load_unlearning()
    assert default.source == f"default:{DEFAULT_METHOD}" and default.accepts_budget
    with pytest.raises(ValueError, match=r"unknown method 'nope'; known methods: .*finetune"):
        load_unlearning(method="nope")
    with pytest.raises(ValueError, match="at most one"):
        load_unlearning(method="finetune", submission="x.py")


def test_notebook_dataclasses_get_a_real_module(tmp_path):
    path = write_notebook(
        tmp_path / "nb.ipynb",
        """
        from dataclasses import dataclass
        @dataclass(frozen=True)
        class Settings:
            lr: float = 1e-3
        def unlearning(net, retain, forget, val):
            return Settings()
        """,
    )
    assert load_unlearning(notebook=path).fn(None, None, None, None).lr == 1e-3


def test_kit_built_kaggle_notebook_loads(tmp_path):
    """A notebook from ``python -m notebooks build`` (inlined kit code) gives its method."""
    from notebooks.build import build_kaggle_notebook
    from notebooks.build import write_notebook as save_notebook

    path = save_notebook(build_kaggle_notebook(method="finetune"), tmp_path / "ft.ipynb")
    loaded = load_unlearning(notebook=path)
    assert callable(loaded.fn) and loaded.source == f"notebook:{path}"


@pytest.mark.parametrize(
    "pairs, message",
    [
        (["lr=abc"], "relearn's lr takes float, default 0.0007; --hp lr='abc' is a str"),
        (["epochs=2.5"], "relearn's epochs takes int, default 6; --hp epochs=2.5 is a float"),
        (["perturb=fast"], "relearn's perturb takes float or None"),
        (["lr=True"], "--hp lr=True is a bool"),
    ],
)
def test_hyperparameter_of_the_wrong_type_is_a_usage_error(pairs, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        load_unlearning(method="relearn", hyperparameters=parse_hyperparameters(pairs))


def test_a_data_argument_is_not_a_hyperparameter(tmp_path):
    """The notebook builder refused these before it shared this check; so does every command."""
    with pytest.raises(UsageError, match="relearn has no hyperparameter retain"):
        load_unlearning(method="relearn", hyperparameters={"retain": 1})
    path = tmp_path / "sub.py"  # a file's hyperparameter may be positional-or-keyword
    path.write_text("def unlearning(net, retain, forget, val, lr=0.01):\n    return net\n")
    load_unlearning(submission=path, hyperparameters={"lr": 0.1})
    with pytest.raises(UsageError, match=re.escape("sub.py has no hyperparameter net")):
        load_unlearning(submission=path, hyperparameters={"net": 0.1})


def test_hyperparameters_of_the_right_type_load():
    pairs = ["lr=1", "epochs=3", "perturb=None", "perturb=0.5", "regime=reset"]
    for pair in pairs:  # an int is a rate's value; None where the annotation allows it
        load_unlearning(method="relearn", hyperparameters=parse_hyperparameters([pair]))
    load_unlearning(method="shrink_perturb", hyperparameters={"scale_lr": False})


def test_every_kit_methods_own_defaults_pass_the_type_check():
    """The check reads each keyword's annotation: a method's own default must fit it (else a
    board's variant repeating a default would be refused)."""
    from submission import METHODS

    checked = 0
    for name, fn in METHODS.items():
        params = inspect.signature(fn, eval_str=True).parameters.values()
        defaults = {
            p.name: p.default
            for p in params
            if p.kind is p.KEYWORD_ONLY and p.name != "budget_s" and p.default is not p.empty
        }
        load_unlearning(method=name, hyperparameters=defaults)
        checked += len(defaults)
    assert checked > 100


def test_a_submission_without_annotations_is_checked_by_its_defaults(tmp_path):
    path = tmp_path / "sub.py"
    path.write_text(
        "def unlearning(net, retain, forget, val, *, lr=0.01, note=None):\n    return net\n"
    )
    load_unlearning(submission=path, hyperparameters={"lr": 0.1, "note": "anything"})
    with pytest.raises(UsageError, match=re.escape("sub.py's lr takes float, default 0.01")):
        load_unlearning(submission=path, hyperparameters={"lr": "x"})
