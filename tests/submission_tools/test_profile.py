import json

import pytest
import torch

from local_eval.common.errors import UsageError
from submission_tools import profile
from submission_tools.profile import (
    REFERENCE_WORKLOAD,
    build_report,
    format_report,
    read_machine_profile,
    reference_workload,
)


def runs(*totals):
    return [
        {"total_s": t, "data_s": 0.1 * t, "step_s": 0.6 * t, "extra_s": 0.3 * t, "steps": 10,
         "planned_steps": 20}
        for t in totals
    ]  # fmt: skip


def test_report_golden_numbers():
    epoch = {"total_s": 10.0}
    report = build_report(runs(2.0, 4.0), epoch, n=512, budget_h=8.0, retrain_epochs=30)
    assert report["seconds_per_run"] == 3.0 and report["slowest_run_s"] == 4.0
    assert report["phases_per_run_s"] == pytest.approx(
        {"data_s": 0.3, "step_s": 1.8, "extra_s": 0.9}
    )
    assert report["retrain_s"] == 300.0
    assert report["ratio_to_retrain"] == pytest.approx(0.01) and report["within_cutoff"]
    here = report["here"]
    assert here["total_s"] == 1536.0 and here["fits_budget"]
    assert here["runs_that_fit"] == 9600 and here["seconds_per_run_allowed"] == pytest.approx(56.25)
    assert "target" not in report


def test_report_projects_by_the_speed_factor_and_flags_misfits():
    report = build_report(
        runs(90.0),
        {"total_s": 10.0},
        n=512,
        retrain_epochs=30,
        budget_h=8.0,
        speed_factor=2.0,
        speed_source="x",
    )
    assert not report["here"]["fits_budget"] and report["here"]["runs_that_fit"] == 320
    target = report["target"]
    assert target["seconds_per_run"] == 45.0 and target["fits_budget"]
    assert target["runs_that_fit"] == 640 and target["speed_factor"] == 2.0
    assert report["ratio_to_retrain"] == pytest.approx(0.3) and not report["within_cutoff"]
    text = format_report(report, "m")
    assert "TOO SLOW" in text and "DOES NOT FIT" in text and "speed x2" in text
    assert "m: 90.000 s per run" in text


def test_machine_profile_is_checked(tmp_path):
    with pytest.raises(UsageError, match="machine profile not found"):
        read_machine_profile(str(tmp_path / "none.json"))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"reference_s": 1.0, "workload": "v0"}))
    with pytest.raises(UsageError, match="another reference workload"):
        read_machine_profile(str(other))
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"workload": REFERENCE_WORKLOAD}))
    with pytest.raises(UsageError, match="no positive 'reference_s'"):
        read_machine_profile(str(empty))


def test_reference_workload_scales_with_its_steps():
    device = torch.device("cpu")
    one, four = (
        reference_workload(device, steps=1, repeats=1),
        reference_workload(device, steps=4, repeats=1),
    )
    assert 0 < one < four


@pytest.mark.slow
def test_profile_cli_reports_phases_and_projects(capsys):
    code = profile.main(
        ["--method", "finetune", "--data", "digits", "--k", "2", "--speed-factor", "4", "--json"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "finetune" and report["arch"] == "smallcnn"
    assert len(report["runs"]) == 2 and report["runs_measured"] == 2
    for r in report["runs"]:
        assert r["data_s"] > 0 and r["step_s"] > 0 and r["extra_s"] >= 0
        assert r["data_s"] + r["step_s"] + r["extra_s"] == pytest.approx(r["total_s"])
        assert r["steps"] == r["planned_steps"] > 0  # full recipe: no budget given
    # "one retraining" is the evaluator's recipe for digits on the small CNN, 10 epochs
    assert report["retrain_recipe"] == "fast_smallcnn" and report["retrain_epochs"] == 10
    assert report["retrain_epoch_s"] > 0
    assert report["ratio_to_retrain"] == pytest.approx(
        report["seconds_per_run"] / (10 * report["retrain_epoch_s"])
    )
    assert report["target"]["seconds_per_run"] == pytest.approx(report["seconds_per_run"] / 4)
    assert report["target"]["source"] == "--speed-factor"


@pytest.mark.slow
def test_calibrate_then_project_with_the_machine_profile(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(profile, "REFERENCE_WORKLOAD", "test: 2 steps, median of 1")
    fast = profile.reference_workload

    def small(device, steps=2, repeats=1):
        return fast(device, steps=steps, repeats=repeats)

    monkeypatch.setattr(profile, "reference_workload", small)
    machine = tmp_path / "machine.json"
    assert profile.main(["--calibrate", str(machine)]) == 0
    saved = json.loads(machine.read_text())
    assert saved["reference_s"] > 0 and saved["device"] == "cpu"
    capsys.readouterr()
    code = profile.main(["--method", "ssd", "--k", "1", "--machine", str(machine), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    # Same machine on both sides: the factor is about 1 (timing noise on a shared CPU aside).
    assert 0.2 < report["target"]["speed_factor"] < 5
    assert str(machine) in report["target"]["source"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "nope"], "unknown method 'nope'"),
        (["--method", "finetune", "--speed-factor", "0"], "--speed-factor must be a positive"),
        (["--method", "finetune", "--k", "0"], "must be at least 1"),
        (["--method", "finetune", "--submission", "x.py"], "give at most one of --method NAME"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys):
    assert profile.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


@pytest.mark.slow
def test_a_competition_folders_original_is_the_default_start(tmp_path, capsys):
    """With --data kaggle:PATH the runs start from PATH/original_model.pth (a method's time can
    depend on the original: relearn chooses its regime from it); elsewhere from an untrained
    model, and the report says which."""
    from data_stubs import StubConfig, make_stub

    folder = make_stub(tmp_path / "stub", StubConfig(n_persons=8, n_forget_persons=1,
                                                     n_val_persons=4, images_per_person=2,
                                                     epochs=1))  # fmt: skip
    argv = ["--method", "finetune", "--data", f"kaggle:{folder}", "--k", "1",
            "--retrain-epochs", "1", "--json"]  # fmt: skip
    assert profile.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["original"] == str(folder / "original_model.pth")
    # it is loaded: an original of another architecture there is refused
    torch.save(torch.nn.Linear(2, 2).state_dict(), folder / "original_model.pth")
    assert profile.main(argv) == 2
    assert "does not fit" in capsys.readouterr().err
    assert profile.main(["--method", "finetune", "--k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["original"] is None
    assert profile.main(["--method", "finetune", "--k", "1"]) == 0
    assert "from an untrained model (no --original" in capsys.readouterr().out
