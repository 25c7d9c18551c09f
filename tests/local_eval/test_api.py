"""The package's public surface: the names it promises, and its docstring example runs."""

import doctest
import subprocess
import sys
from pathlib import Path

import pytest

import local_eval


def test_every_public_name_resolves():
    for name in local_eval.__all__:
        assert callable(getattr(local_eval, name)), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        local_eval.nope  # noqa: B018


def test_the_scorer_imports_without_torch():
    """The package's names load on first use, so the pure-numpy scorer stays light."""
    code = "import sys, local_eval.scoring.metric; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(local_eval.__file__).parents[1])  # fmt: skip
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_the_docstring_example_runs():
    result = doctest.testmod(local_eval, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0
