"""The command line: outputs, dispatch, and one clear line (no traceback) per user error."""

import json

import pytest

from local_eval.cli.main import main
from tests.local_eval.conftest import HEADER, write_csv, write_kaggle_folder
from tests.local_eval.runs.test_loading import write_notebook

QUICK = ["--n-models", "2", "--epochs", "1", "--workers", "1", "--threads", "1", "--quiet"]


@pytest.fixture
def run(tmp_path, capsys):
    def run(*args):
        code = main([*QUICK, "--cache-dir", str(tmp_path / "cache"), *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def assert_clean_error(code, err, message):
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


@pytest.mark.slow
def test_default_job_writes_the_report_and_rescoring_matches(tmp_path, run, capsys):
    out = tmp_path / "out"
    code, stdout, err = run("--method", "finetune", "--out", out, "--budget-s", 30)
    assert code == 0, err
    assert "score" in stdout and "NOT the competition metric" in stdout
    assert "budget: 30 s per run; 0 run(s) over it" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["n_models"] == 2 and report["method"]["source"] == "method:finetune"
    assert report["recipe"]["epochs"] == 1 and report["data"]["sizes"]["forget"] == 126
    assert report["models_trained"] == {"original": 2, "retrained": 4}
    assert set(report["stage_seconds"]) >= {"data", "original", "unlearning", "references"}
    assert report["versions"]["torch"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temp left

    code = main(
        [
            "score",
            "--unlearned",
            str(out / "unlearned.npz"),
            "--retrained",
            str(out / "retrained.npz"),
            "--json",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["forget_quality"] == pytest.approx(
        report["forget_quality"]
    )


def test_unknown_method(run, tmp_path):
    code, _, err = run("--method", "nope", "--out", tmp_path / "out")
    assert_clean_error(code, err, "unknown method 'nope'")
    assert not (tmp_path / "out").exists()


def test_file_without_unlearning(run, tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("def helper():\n    pass\n")
    code, _, err = run("--submission", path, "--out", tmp_path / "out")
    assert_clean_error(code, err, "defines no function 'unlearning'")
    assert not (tmp_path / "out").exists()


def test_notebook_without_unlearning(run, tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", "import torch\n")
    code, _, err = run("--notebook", path, "--out", tmp_path / "out")
    assert_clean_error(code, err, "defines no function 'unlearning'")


def test_raising_submission_leaves_nothing_written(run, tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("def unlearning(net, retain, forget, val):\n    raise KeyError('oops')\n")
    code, _, err = run("--submission", path, "--out", tmp_path / "out")
    assert_clean_error(code, err, "raised KeyError: 'oops'")
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        main([*QUICK, "--method", "nope", "--debug", "--cache-dir", str(tmp_path)])


def test_dataset_errors(run, tmp_path):
    code, _, err = run("--dataset", f"kaggle:{tmp_path / 'missing'}")
    assert_clean_error(code, err, "competition folder not found")
    folder = write_kaggle_folder(tmp_path / "comp")
    write_csv(folder / "validation.csv", ["image_id", "age_group", "age"], [["p011-0", 1, 10]])
    code, _, err = run("--dataset", f"kaggle:{folder}")
    assert_clean_error(code, err, "lacks column(s) person_id")
    code, _, err = run("--dataset", "imagenet")
    assert_clean_error(code, err, "unknown dataset 'imagenet'")


def test_forget_set_errors(run, tmp_path):
    folder = write_kaggle_folder(tmp_path / "comp")
    write_csv(folder / "forget.csv", HEADER, [])
    code, _, err = run("--dataset", f"kaggle:{folder}")
    assert_clean_error(code, err, "forget set is empty")
    write_csv(folder / "forget.csv", HEADER, [["p005-0", 1, 10, 1005]])
    code, _, err = run("--dataset", f"kaggle:{folder}")
    assert_clean_error(code, err, "retain and forget overlap")
    code, _, err = run("--forget", "random:2")
    assert_clean_error(code, err, "fraction must be in (0, 1)")


def test_kaggle_folder_end_to_end(run, tmp_path):
    folder = write_kaggle_folder(tmp_path / "comp")
    code, _, err = run(
        "--dataset",
        f"kaggle:{folder}",
        "--arch",
        "smallcnn",
        "--method",
        "finetune",
        "--out",
        tmp_path / "out",
    )
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["data"]["forget"] == "given" and report["n_forget_examples"] == 6
    assert report["recipe"]["name"] == "fast_smallcnn"


def test_out_must_be_a_folder(run, tmp_path):
    (tmp_path / "file").write_text("x")
    code, _, err = run("--out", tmp_path / "file")
    assert_clean_error(code, err, "is not a folder")


def test_budget_option_reads_auto_retime_none_and_seconds():
    import argparse

    from local_eval.cli.main import parser
    from local_eval.cli.options import budget_value, eval_config

    assert budget_value("auto") == "auto" and budget_value("None") is None
    assert budget_value("Retime") == "retime"
    assert budget_value("2.5") == 2.5
    with pytest.raises(argparse.ArgumentTypeError, match="give auto, retime, none or a number"):
        budget_value("fast")
    assert eval_config(parser().parse_args([])).budget_s == "auto"  # the default: the rule
    assert eval_config(parser().parse_args(["--budget-s", "none"])).budget_s is None
