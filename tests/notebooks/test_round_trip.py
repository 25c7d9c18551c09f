"""Round trip: a built Kaggle notebook, scored by the evaluator on the competition stubs.

``python -m notebooks build`` inlines a method into a notebook; ``python -m local_eval
--notebook BUILT.ipynb --dataset kaggle:STUBS`` must take the notebook's ``unlearning`` (and
only its definitions: the checkpoint loop never runs) and score it on the stub folder, which
is laid out exactly like the competition's input.
"""

import json

import pytest

from data_stubs import StubConfig, make_stub
from local_eval.cli.main import main as evaluate
from notebooks.build import build_kaggle_notebook, write_notebook


@pytest.mark.slow
def test_built_notebook_is_scored_on_the_stubs(tmp_path, capsys):
    stubs = make_stub(
        tmp_path / "stubs",
        StubConfig(n_persons=12, n_forget_persons=2, n_val_persons=6, images_per_person=4),
    )
    notebook = write_notebook(build_kaggle_notebook(method="finetune"), tmp_path / "ft.ipynb")
    out = tmp_path / "out"
    code = evaluate(
        [
            "--notebook", str(notebook),
            "--dataset", f"kaggle:{stubs}",
            "--n-models", "2",
            "--epochs", "1",
            "--workers", "1",
            "--threads", "1",
            "--quiet",
            "--cache-dir", str(tmp_path / "cache"),
            "--out", str(out),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["method"]["source"] == f"notebook:{notebook}"
    assert report["data"]["dataset"] == f"kaggle:{stubs}"
    assert report["n_models"] == 2
    assert report["n_forget_examples"] == 2 * 4  # the stub's forget persons' images
    assert 0.0 <= report["forget_quality"] <= 1.0
    # The notebook's checkpoint loop did not run: nothing was written to Kaggle's folders.
    assert not list(tmp_path.glob("**/unlearned_checkpoint_*.pth"))
    assert not list(tmp_path.glob("**/submission.zip"))
