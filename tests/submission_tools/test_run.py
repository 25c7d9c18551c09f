"""Unit tests of the runner's pieces (no data loaded); end to end: test_run_cli.py."""

import json
import zipfile
from pathlib import Path

import pytest
import torch

import submission
from local_eval.common.checks import check_state_dict_fits
from local_eval.common.errors import UsageError
from local_eval.common.files import sha256_of
from local_eval.runs.loading import parse_hyperparameters
from submission_tools.run import folder as run
from submission_tools.run.budget import BudgetWatch
from submission_tools.run.cli import main
from submission_tools.run.folder import lock_folder, valid_checkpoints, write_zip
from submission_tools.run.inputs import load_method
from submission_tools.run.job import RunJob
from tests.submission.conftest import TinyNet


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_fitting_state_dict_passes():
    check_state_dict_fits(TinyNet().state_dict(), TinyNet(), "tiny", "orig.pth")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("head.weight"), "missing keys: head.weight"),
        (lambda s: s.__setitem__("extra.bias", torch.zeros(1)), "unexpected keys: extra.bias"),
        (
            lambda s: s.__setitem__("head.weight", torch.zeros(3, 8)),
            r"head.weight \(3, 8\) vs \(10, 8\)",
        ),
    ],
)
def test_state_dict_that_does_not_fit_is_refused_clearly(edit, message):
    state = TinyNet().state_dict()
    edit(state)
    with pytest.raises(UsageError, match=message) as info:
        check_state_dict_fits(state, TinyNet(), "tiny", "orig.pth")
    assert "does not fit --arch tiny" in str(info.value)


def test_long_key_lists_are_shortened():
    with pytest.raises(UsageError, match=r"\(\+\d+ more\)"):
        check_state_dict_fits({}, TinyNet(), "tiny", "orig.pth")


def test_parse_hyperparameters_reads_python_literals():
    assert parse_hyperparameters(["lr=0.01", "epochs=2", "name=abc", "flag=True"]) == {
        "lr": 0.01,
        "epochs": 2,
        "name": "abc",
        "flag": True,
    }
    with pytest.raises(UsageError, match="NAME=VALUE"):
        parse_hyperparameters(["lr"])


def job_of(**kwargs) -> RunJob:
    return RunJob(data="digits", original=Path("orig.pth"), out=Path("out"), **kwargs)


def test_the_method_gets_its_defaults_and_overrides():
    method = load_method(job_of(method="scrub", hp=("epochs=1",)))
    assert method.name == "scrub" and method.accepts_budget
    hyperparameters = method.hyperparameters()
    assert hyperparameters["epochs"] == 1 and hyperparameters["msteps"] == 2
    assert "budget_s" not in hyperparameters
    assert job_of(method="scrub").identity(method, "sha", "fp")["hyperparameters"]["epochs"] == "1"


def test_method_errors_are_clear():
    with pytest.raises(ValueError, match=r"known methods: .*finetune"):
        load_method(job_of(method="nope"))
    with pytest.raises(UsageError, match="no hyperparameter lrr; its hyperparameters: epochs"):
        load_method(job_of(method="finetune", hp=("lrr=1",)))
    with pytest.raises(UsageError, match="at most one"):
        load_method(job_of(method="scrub", submission=Path("mine.py")))


def test_no_method_is_the_kits_default():
    method = load_method(job_of())
    assert method.name == submission.DEFAULT_METHOD and method.accepts_budget


def test_user_submission_file(tmp_path):
    good = tmp_path / "mine.py"
    good.write_text("def unlearning(net, retain, forget, val):\n    return net\n")
    method = load_method(job_of(submission=good))
    assert method.name == "file:mine.py" and not method.accepts_budget
    assert method.hyperparameters() == {}
    net = TinyNet()
    assert method(net, [], [], [], budget_s=1.0) is net
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ValueError, match="defines no function 'unlearning'"):
        load_method(job_of(submission=bad))
    with pytest.raises(UsageError, match="submission file not found"):
        load_method(job_of(submission=tmp_path / "missing.py"))


def test_budget_watch_projects_warns_and_refuses():
    clock = Clock()
    watch = BudgetWatch(100.0, 10, prior_s=5.0, clock=clock)
    assert watch.estimate() == 5.0 and watch.can_start()
    clock.now = 20.0
    assert watch.record(20.0) is None  # one run: too early to project
    clock.now = 40.0
    warning = watch.record(20.0)
    # 8 runs left at 20 s on top of 40 s elapsed: 200 s projected against 100 s.
    assert warning == (
        "warning: at 20.00 s per run the 10 runs need about 3.3 min, over the 100 s budget; "
        "about 5 of them fit"
    )
    assert watch.runs_that_fit() == 2 + 3
    assert watch.record(20.0) is None  # warns once
    clock.now = 85.0
    assert not watch.can_start()  # 85 + 20 > 100
    clock.now = 79.0
    assert watch.can_start()


def test_budget_watch_estimate_leans_toward_the_slowest_run():
    watch = BudgetWatch(100.0, 10, clock=Clock())
    for seconds in (1.0, 1.0, 4.0):
        watch.record(seconds)
    assert watch.estimate() == pytest.approx(0.5 * (2.0 + 4.0))


def save_checkpoints(out, n):
    entries = {}
    for i in range(n):
        name = run.CHECKPOINT.format(i)
        torch.save({"w": torch.full((2,), float(i))}, out / name)
        entries[str(i)] = {"file": name, "sha256": sha256_of(out / name)}
    return {"checkpoints": entries}


def test_valid_checkpoints_keeps_only_matching_files(tmp_path):
    manifest = save_checkpoints(tmp_path, 5)
    (tmp_path / "unlearned_checkpoint_1.pth").write_bytes(b"torn")  # broken
    (tmp_path / "unlearned_checkpoint_2.pth").unlink()  # missing
    (tmp_path / "unlearned_checkpoint_9.pth").write_bytes(b"stray")  # no manifest entry
    (tmp_path / "unlearned_checkpoint_3.pth.tmp").write_bytes(b"half")
    keep = valid_checkpoints(tmp_path, manifest, n=4)  # index 4 is beyond N now
    assert sorted(keep) == ["0", "3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "unlearned_checkpoint_0.pth",
        "unlearned_checkpoint_3.pth",
    ]


def test_zip_holds_exactly_n_loadable_checkpoints(tmp_path):
    save_checkpoints(tmp_path, 3)
    path = write_zip(tmp_path, 3)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert names == [f"unlearned_checkpoint_{i}.pth" for i in range(3)]
        archive.extractall(tmp_path / "x")
    for i in range(3):
        state = torch.load(tmp_path / "x" / names[i], weights_only=True)
        assert state["w"].tolist() == [float(i)] * 2
    with pytest.raises(UsageError, match="1 checkpoints missing"):
        write_zip(tmp_path, 4)


def test_second_job_in_the_same_folder_is_refused(tmp_path):
    with lock_folder(tmp_path):
        with pytest.raises(UsageError, match="another job is writing"):
            with lock_folder(tmp_path):
                pass
    with lock_folder(tmp_path):  # released: a later job gets it
        pass


def test_manifest_of_another_job_is_refused(tmp_path):
    (tmp_path / run.MANIFEST).write_text(json.dumps({"method": "scrub", "seed": 0}))
    with pytest.raises(UsageError, match="different job \\(method differ"):
        run.load_manifest(tmp_path, {"method": "finetune", "seed": 0})
    assert run.load_manifest(tmp_path, {"method": "scrub", "seed": 0})["checkpoints"] == {}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "0"], "--n must be at least 1"),
        (["--budget-h", "-1"], "--budget-h must be a positive number"),
        (["--budget-s", "0"], "--budget-s must be a positive number"),
        (["--cutoff", "1.5"], "--cutoff is a share of one retraining (0: off, below 1): 1.5"),
        (["--original", "missing.pth"], "original model not found: missing.pth"),
        (["--method", "nope"], "unknown method 'nope'; known methods: bad_teacher"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(TinyNet().state_dict(), tmp_path / "orig.pth")
    base = {"--data": "digits", "--original": "orig.pth", "--arch": "tiny", "--out": "o"}
    base["--method"] = "finetune"
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        base[flag] = value
    args = [item for pair in base.items() for item in pair]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
