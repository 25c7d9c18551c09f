"""Fixtures for executing notebooks in a real Jupyter kernel of *this* interpreter.

The kernelspec is written to a temporary directory on ``JUPYTER_PATH``, so the tests never
depend on a kernel installed by hand (CI builds a fresh ``.venv``).
"""

import json
import os
import sys

import pytest

from data_stubs import StubConfig, make_stub
from tests.notebooks.fakes import write_package

KERNEL_NAME = "unlearning-kit-tests"
# A small stub: what matters here is the notebook's plumbing, not the model's quality.
STUB_CONFIG = StubConfig(seed=1, n_persons=16, n_forget_persons=2, n_val_persons=4,
                         images_per_person=4, epochs=1)


@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory):
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "unlearning-kit tests",
        "language": "python",
    }))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(root), old]))
    yield KERNEL_NAME
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


@pytest.fixture(scope="session")
def stub_dir(tmp_path_factory):
    return make_stub(tmp_path_factory.mktemp("stub") / "input", STUB_CONFIG)


@pytest.fixture(scope="session")
def mock_dir(tmp_path_factory):
    return make_stub(tmp_path_factory.mktemp("mock") / "input", mock=True)


@pytest.fixture
def execute(kernel_name):
    """``execute(nb, cwd, **env)``: run ``nb`` in a fresh kernel started in ``cwd`` whose
    environment is this one plus ``env`` (without PYTHONPATH: the repository is not
    importable there, as on Kaggle). Returns the executed notebook."""
    from nbclient import NotebookClient

    def run(nb, cwd, timeout=300, **env):
        full_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        full_env.update({"OMP_NUM_THREADS": "1", **{k: str(v) for k, v in env.items()}})
        client = NotebookClient(nb, kernel_name=kernel_name, timeout=timeout,
                                resources={"metadata": {"path": str(cwd)}})
        client.execute(env=full_env)
        return nb

    return run


@pytest.fixture
def fakekit(tmp_path, monkeypatch):
    pkg = write_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for mod in [m for m in sys.modules if m == "fakekit" or m.startswith("fakekit.")]:
        del sys.modules[mod]
