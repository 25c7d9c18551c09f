"""``python -m submission.run`` end to end: real subprocesses, the digits data, a small CNN."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from local_eval.runs.unlearning import run_seed
from local_eval.training.models import build_model
from submission_tools.run import folder as run_folder
from submission_tools.run.cli import build_parser, main
from submission_tools.run.inputs import load_inputs, run_once
from submission_tools.run.job import RunJob

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def digits_model(arch: str = "smallcnn"):
    return build_model(arch, num_classes=10, in_channels=1, image_size=8)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("orig") / "original.pth"
    torch.save(digits_model().state_dict(), path)
    return path


def command(original, out, *extra):
    return [
        sys.executable, "-m", "submission.run", "--data", "digits", "--arch", "smallcnn",
        "--original", str(original), "--out", str(out), *extra,
    ]  # fmt: skip


def run_cli(*args, timeout=120):
    return subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def checkpoint_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("unlearned_checkpoint_*.pth"))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_complete(out: Path, n: int, original: Path):
    names = [f"unlearned_checkpoint_{i}.pth" for i in range(n)]
    assert checkpoint_files(out) == sorted(names)
    assert not list(out.glob("*.tmp"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["checkpoints"], key=int) == [str(i) for i in range(n)]
    reference = torch.load(original, weights_only=True)
    for i, name in enumerate(names):
        entry = manifest["checkpoints"][str(i)]
        assert entry["file"] == name and entry["sha256"] == sha(out / name)
        assert entry["seed"] == run_seed(0, i) and entry["seconds"] > 0
        state = torch.load(out / name, weights_only=True)
        digits_model().load_state_dict(state)  # strict: keys and shapes fit the architecture
        assert any(not torch.equal(state[k], reference[k]) for k in reference)
    return manifest


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_exactly_n_valid_checkpoints(original, tmp_path):
    n = 6
    out = tmp_path / "out"
    # --cutoff 0: the budget no timing moves, so run i is the same model whenever it is made
    job = ("--method", "random_label", "--hp", "epochs=2", "--n", str(n), "--cutoff", "0")
    args = command(original, out, *job, "--zip")
    proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True)
    manifest_path = out / "manifest.json"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if manifest_path.exists():
            done = json.loads(manifest_path.read_text() or "{}").get("checkpoints", {})
            if len(done) >= 2:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    kept = json.loads(manifest_path.read_text())["checkpoints"]
    assert 2 <= len(kept) < n, "the job was not killed mid-way"
    assert not (out / "submission.zip").exists()
    # Damage the folder the way a crash can: a torn checkpoint and a leftover temporary file.
    torn = out / kept["1"]["file"]
    torn.write_bytes(torn.read_bytes()[:100])
    (out / "unlearned_checkpoint_5.pth.tmp").write_bytes(b"half")
    intact = {k: (v["sha256"], (out / v["file"]).stat().st_mtime_ns) for k, v in kept.items()}

    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert f"resuming: {len(kept) - 1} valid checkpoints kept" in result.stderr
    manifest = assert_complete(out, n, original)
    for key, (digest, mtime) in intact.items():
        if key != "1":  # kept as they were, not recomputed
            assert manifest["checkpoints"][key]["sha256"] == digest
            assert (out / f"unlearned_checkpoint_{key}.pth").stat().st_mtime_ns == mtime
    with zipfile.ZipFile(out / "submission.zip") as archive:
        assert sorted(archive.namelist()) == checkpoint_files(out)
        for name in archive.namelist():
            assert hashlib.sha256(archive.read(name)).hexdigest() == sha(out / name)

    # Kept and redone checkpoints alike are what run i gives (runs are seeded per index).
    job = RunJob.from_args(build_parser().parse_args(args[3:]))
    inputs = load_inputs(job)
    for i in (0, 1, n - 1):
        expected = run_once(inputs, index=i, budget_s=None, batch_size=job.batch_size)
        got = torch.load(out / f"unlearned_checkpoint_{i}.pth", weights_only=True)
        assert all(torch.equal(got[k], expected[k]) for k in expected), i

    # A finished job run again does nothing and keeps every file.
    again = run_cli(*args)
    assert again.returncode == 0 and "all 6 checkpoints were already there" in again.stderr


@pytest.mark.slow
def test_budget_stops_before_a_run_that_cannot_finish_then_resumes(original, tmp_path):
    out = tmp_path / "out"
    # A submission that spends 0.45 s a run whatever the machine (a real method can finish
    # early on a quiet CPU): 20 runs cannot fit 6 s (the warm-up, ~2 s on CPU, counts too).
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import time\n\n\n"
        "def unlearning(net, retain, forget, val, *, budget_s=None):\n"
        "    time.sleep(0.45)\n"
        "    next(net.parameters()).data.add_(0.01)  # a change, as real unlearning makes\n"
        "    return net.eval()\n"
    )
    base = command(original, out, "--submission", str(slow), "--n", "20", "--budget-s", "0.5")
    result = run_cli(*base, "--budget-h", str(6 / 3600))
    assert result.returncode == 3, result.stderr
    assert "warning: 20 runs of up to 0.5 s need up to 10 s, over the 6 s budget" in result.stderr
    have = len(checkpoint_files(out))
    assert 1 <= have < 20
    assert f"stopped with {have} of 20 checkpoints" in result.stderr
    assert "Rerun the same command with a larger --budget-h" in result.stderr
    assert "Traceback" not in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["checkpoints"]) == have
    assert all(entry["seconds"] < 0.5 + 0.4 for entry in manifest["checkpoints"].values())
    (job,) = manifest["jobs"]
    assert job["stopped_for_budget"] and job["runs"] == have and job["budget_s"] == 6
    assert job["elapsed_s"] <= 6 + 0.1  # no run started that could not finish

    result = run_cli(*base, "--budget-h", "1", "--zip")
    assert result.returncode == 0, result.stderr
    assert f"resuming: {have} valid checkpoints kept, {20 - have} to do" in result.stderr
    manifest = assert_complete(out, 20, original)
    assert [job["stopped_for_budget"] for job in manifest["jobs"]] == [True, False]
    with zipfile.ZipFile(out / "submission.zip") as archive:
        assert len(archive.namelist()) == 20


@pytest.mark.slow
def test_original_that_does_not_fit_the_architecture_is_refused(tmp_path):
    wrong = tmp_path / "resnet.pth"
    torch.save(digits_model("resnet18").state_dict(), wrong)
    result = run_cli(*command(wrong, tmp_path / "out", "--method", "finetune", "--n", "2"))
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"error: the original model {wrong} does not fit --arch smallcnn"
    )
    assert (
        "missing keys: 0.weight" in result.stderr
        and "unexpected keys: conv1.weight" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written for a refused job


def test_full_disk_is_refused_before_any_work(original, tmp_path, monkeypatch, capsys):
    """The free space is checked against N checkpoints (and the zip) before the first run."""
    real = run_folder.shutil.disk_usage

    def tiny_disk(path):
        return real(path)._replace(free=5 << 20)  # 5 MiB free

    monkeypatch.setattr(run_folder.shutil, "disk_usage", tiny_disk)
    out = tmp_path / "out"
    argv = command(original, out, "--method", "finetune", "--n", "512", "--zip")[3:]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "not enough disk space" in err and "512 checkpoints" in err and "plus the zip" in err
    assert "Traceback" not in err
    assert not out.exists()  # nothing of the job is left behind


def test_cutoff_cap_is_the_share_of_the_epochs_less_the_margin():
    from submission_tools.run.cutoff import cutoff_cap_s

    assert cutoff_cap_s(2.0, 30) == pytest.approx(0.9 * 0.2 * 60)
    assert cutoff_cap_s(0.5, 10, share=0.1, margin=1.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="epoch_s > 0"):
        cutoff_cap_s(0.0, 30)


@pytest.mark.slow
def test_a_job_share_over_the_cutoff_is_capped_unless_lifted(original, tmp_path):
    """Without --budget-s a run is granted at most 90% of 20% of one retraining (an epoch of
    the evaluator's recipe timed first), however many hours the job has; --cutoff 0 lifts the
    cap, and --budget-s fixes the budget without timing anything."""
    share = 0.9 * 1 * 3600 / 2  # --budget-h 1, --n 2: 1,620 s a run
    out = tmp_path / "capped"
    result = run_cli(*command(original, out, "--method", "finetune", "--n", "2", "--budget-h", "1"))
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stderr.splitlines() if x.startswith("one retraining here"))
    assert "(fast_smallcnn, 10 epochs)" in line and "--cutoff 0 lifts it" in line
    cap = float(line.split("a run gets at most ")[1].split(" s")[0])
    budgets = {e["budget_s"] for e in json.loads((out / "manifest.json").read_text())[
        "checkpoints"].values()}  # fmt: skip
    assert len(budgets) == 1 and budgets.pop() == pytest.approx(cap, abs=0.006) and cap < share
    assert f"{cap:.2f} s budget per run" in result.stderr
    (log,) = json.loads((out / "manifest.json").read_text())["jobs"]  # what capped the runs
    assert log["cutoff"]["recipe"] == "fast_smallcnn" and log["cutoff"]["epochs"] == 10
    assert log["cutoff"]["cap_s"] == pytest.approx(0.9 * 0.2 * 10 * log["cutoff"]["epoch_s"],
                                                   abs=1e-3)  # fmt: skip
    assert log["cutoff"]["cap_s"] == pytest.approx(cap, abs=0.006)

    lifted = tmp_path / "lifted"
    result = run_cli(*command(original, lifted, "--method", "finetune", "--n", "2",
                              "--budget-h", "1", "--cutoff", "0"))  # fmt: skip
    assert result.returncode == 0 and "one retraining here" not in result.stderr
    entries = json.loads((lifted / "manifest.json").read_text())["checkpoints"].values()
    assert [e["budget_s"] for e in entries] == pytest.approx([share, share])
    assert "cutoff" not in json.loads((lifted / "manifest.json").read_text())["jobs"][0]

    fixed = tmp_path / "fixed"
    result = run_cli(*command(original, fixed, "--method", "finetune", "--n", "2",
                              "--budget-s", "7"))  # fmt: skip
    assert result.returncode == 0 and "one retraining here" not in result.stderr
    entries = json.loads((fixed / "manifest.json").read_text())["checkpoints"].values()
    assert {e["budget_s"] for e in entries} == {7}
