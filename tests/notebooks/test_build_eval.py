"""``python -m notebooks build-eval``: the local-evaluation notebook, built, parametrised and
executed end to end in a real kernel on digits."""

import json
import os
import time
from pathlib import Path

import nbformat
import pytest

from notebooks import BuildError, build_eval_notebook
from notebooks.__main__ import main
from notebooks.eval_notebook import ENV_VARS

REPO = Path(__file__).resolve().parents[2]


def code_cells(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def run_cells(sources: list[str]) -> dict:
    namespace: dict = {}
    for source in sources:
        exec(compile(source, "<cell>", "exec"), namespace)
    return namespace


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts += [data.get("text/markdown", ""), data.get("text/plain", "")]
    return "\n".join(parts)


def test_builds_a_valid_notebook_with_parameters_first():
    nb = build_eval_notebook(method="finetune", n_models=5)
    nbformat.validate(nb)
    assert nb.metadata["unlearning_kit"] == {
        "built_by": "python -m notebooks build-eval", "dataset": "digits",
        "method": "finetune", "n_models": 5}
    params = code_cells(nb)[0]
    assert params.startswith("# Parameters")
    lines = {line.partition(" = ")[0]: line for line in params.splitlines()}
    for name in ("DATASET", "METHOD", "N_MODELS", "OUT_DIR", "CACHE_DIR"):
        assert f"os.environ.get({ENV_VARS[name]!r}" in lines[name]
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for phrase in ("does **not** reach\n  F = 1", "**floor**", "not the competition metric",
                   "epsilons.png", "hardest.png", "accuracies.png"):
        assert phrase in text
    assert sum("display(Image(" in s for s in code_cells(nb)) == 3


def test_parameters_take_build_defaults_and_env_overrides(monkeypatch):
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    params = code_cells(build_eval_notebook(method="finetune", n_models=7))[0]
    ns = run_cells([params])
    assert (ns["DATASET"], ns["METHOD"], ns["N_MODELS"]) == ("digits", "finetune", 7)
    assert (ns["OUT_DIR"], ns["CACHE_DIR"], ns["WORKERS"], ns["PROGRESS"]) == (
        None, None, None, True)
    monkeypatch.setenv("UNLEARN_EVAL_N_MODELS", "3")
    monkeypatch.setenv("UNLEARN_EVAL_METHOD", "")  # empty: the kit's default
    monkeypatch.setenv("UNLEARN_EVAL_OUT", "here")
    monkeypatch.setenv("UNLEARN_CACHE_DIR", "/tmp/cache")
    ns = run_cells([params])
    assert (ns["METHOD"], ns["N_MODELS"], ns["OUT_DIR"], ns["CACHE_DIR"]) == (
        None, 3, "here", "/tmp/cache")
    default = code_cells(build_eval_notebook())[0]
    monkeypatch.delenv("UNLEARN_EVAL_METHOD")
    assert run_cells([default])["METHOD"] is None


def test_kit_root_from_env_the_working_directory_or_the_build(monkeypatch, tmp_path):
    nb = build_eval_notebook()
    monkeypatch.delenv("UNLEARN_KIT_ROOT", raising=False)
    # A notebook inside the repository, below tests/, whose local_eval/ and submission/ are
    # test packages, not the kit.
    monkeypatch.chdir(REPO / "tests" / "notebooks")
    ns = run_cells(code_cells(nb)[:2])
    assert ns["KIT_ROOT"] == REPO
    ns["BUILT_FROM"] = str(tmp_path / "gone")
    assert ns["find_kit_root"]() == REPO  # found upwards from the working directory
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="set UNLEARN_KIT_ROOT"):
        ns["find_kit_root"]()
    ns["BUILT_FROM"] = str(REPO)  # the notebook copied elsewhere: the repository it came from
    assert ns["find_kit_root"]() == REPO
    monkeypatch.setenv("UNLEARN_KIT_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no local_eval/ and submission/"):
        ns["find_kit_root"]()
    monkeypatch.setenv("UNLEARN_KIT_ROOT", str(REPO))
    assert ns["find_kit_root"]() == REPO


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "nope"}, r"unknown method 'nope'; known: .*finetune"),
    ({"dataset": "imagenet"}, r"unknown dataset 'imagenet'; known: digits, mnist5k"),
    ({"dataset": "kaggle:"}, r"unknown dataset 'kaggle:'"),
    ({"n_models": 1}, r"n_models must be an integer of at least 2"),
])
def test_bad_arguments_fail_clearly(kwargs, message):
    with pytest.raises(BuildError, match=message):
        build_eval_notebook(**kwargs)


def test_cli_writes_a_notebook_or_fails_clearly(tmp_path, capsys):
    out = tmp_path / "nb" / "eval.ipynb"
    assert main(["build-eval", "--out", str(out), "--method", "finetune", "--n-models", "4"]) == 0
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["unlearning_kit"]["n_models"] == 4
    assert "wrote" in capsys.readouterr().out
    bad = tmp_path / "bad.ipynb"
    assert main(["build-eval", "--out", str(bad), "--method", "nope"]) == 2
    assert "error: unknown method 'nope'; known:" in capsys.readouterr().err
    assert main(["build-eval", "--out", str(bad), "--n-models", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert not bad.exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse: not an integer
        main(["build-eval", "--out", str(bad), "--n-models", "many"])
    assert exit_info.value.code == 2
    assert "--n-models: invalid int value: 'many'" in capsys.readouterr().err
    assert not bad.exists()


@pytest.mark.slow
def test_executes_on_digits_and_shows_the_report(execute, tmp_path):
    nb = build_eval_notebook(method="finetune", n_models=32)
    start = time.perf_counter()
    nb = execute(nb, tmp_path, timeout=240, UNLEARN_KIT_ROOT=REPO, UNLEARN_EVAL_N_MODELS=3,
                 UNLEARN_EVAL_OUT="out", UNLEARN_CACHE_DIR=tmp_path / "cache",
                 UNLEARN_EVAL_PROGRESS=0)
    seconds = time.perf_counter() - start
    out = tmp_path / "out"  # relative to the kernel's working directory
    report = json.loads((out / "report.json").read_text())
    assert report["n_models"] == 3 and report["method"]["source"] == "method:finetune"
    assert os.listdir(tmp_path / "cache")  # the reference models went to the given cache
    text = outputs_text(nb)
    assert f"final score {report['score']:.4f}" in text
    assert f"**Final score {report['score']:.4f}**" in text
    assert f"ceiling {report['ceiling']['forget_quality']:.4f}" in text
    assert "NOT the competition metric" in text
    assert not any(o.output_type == "error" for c in nb.cells for o in c.get("outputs", []))
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 3
    print(f"build-eval notebook on digits, N = 3, cold cache: {seconds:.1f} s")
