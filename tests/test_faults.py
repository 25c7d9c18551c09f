"""Faults during long work: kills, corrupt files, unwritable and contended output folders.

- ``submission.run`` is SIGKILLed at seeded random moments (:data:`KILL_TRIALS` trials, each
  a job in a fresh interpreter, as a user's would be); after resuming in another, every trial
  must end with exactly N valid checkpoints and a consistent manifest. A job that hangs fails
  the test with its stacks.
- A checkpoint or a ``local_eval`` cache entry truncated or with flipped bytes is detected
  (checksums), reported on stderr and rebuilt, never used.
- An output folder that cannot be written gives a clear error before any work. Tests may run
  as root, where ``chmod`` restricts nothing: then the folder lies under a regular file.
- A second job writing to the same output folder is refused (a lock), for ``submission.run``
  and for ``local_eval --out``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import local_eval.cli.main as cli
from local_eval.cli.options import out_lock
from local_eval.common.files import sha256_of
from local_eval.training.cache import ModelCache
from local_eval.training.models import build_model
from local_eval.training.signals import ModelRecord
from submission_tools.run import folder as run
from submission_tools.run import runner
from submission_tools.run.cli import main as run_main

KILL_TRIALS = 5
N = 4
JOB_LIMIT_S = 120  # a job of N runs of 0.2 s takes seconds; far longer is a hang
ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
QUICK_LE = ["--n-models", "2", "--epochs", "1", "--workers", "1", "--quiet"]


def digits_model():
    return build_model("smallcnn", num_classes=10, in_channels=1, image_size=8)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("orig") / "original.pth"
    torch.save(digits_model().state_dict(), path)
    return path


def job(original: Path, out: Path, *extra) -> list[str]:
    return ["--data", "digits", "--arch", "smallcnn", "--original", str(original),
            "--method", "finetune", "--hp", "epochs=1", "--n", str(N), "--budget-s", "0.1",
            "--out", str(out), *extra]  # fmt: skip


def invoke(fn, argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = fn(argv)
    return code, err.getvalue()


def assert_intact(out: Path, n: int) -> dict:
    """Exactly ``n`` valid checkpoints and a manifest that describes exactly them."""
    names = {f"unlearned_checkpoint_{i}.pth" for i in range(n)}
    assert {p.name for p in out.glob("unlearned_checkpoint_*")} == names
    assert not list(out.glob("*.tmp"))
    manifest = json.loads((out / run.MANIFEST).read_text())
    assert manifest["n"] == n
    assert sorted(manifest["checkpoints"], key=int) == [str(i) for i in range(n)]
    for i, entry in manifest["checkpoints"].items():
        path = out / entry["file"]
        assert entry["file"] == f"unlearned_checkpoint_{i}.pth"
        assert sha256_of(path) == entry["sha256"]
        digits_model().load_state_dict(torch.load(path, weights_only=True))
    return manifest


# ------------------------------------------------------------------------- SIGKILL, resume
def _start_job(argv: list[str], log: Path) -> subprocess.Popen:
    """``python -m submission_tools.run ARGV`` in a fresh interpreter, stderr into ``log``.

    Not a fork of this process: pytest here carries torch's thread pools and whatever threads
    earlier tests left running, and a forked child may wait forever on a lock one of them held
    (CI once hung here with no output). ``PYTHONFAULTHANDLER`` lets a hung job print its
    stacks when :func:`_finish` sends it SIGABRT."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    with open(log, "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "submission_tools.run", *argv],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def _finish(proc: subprocess.Popen, log: Path, what: str) -> int:
    """The job's exit code; a job still going after :data:`JOB_LIMIT_S` is a hang: the test
    fails with the job's stacks rather than waiting for CI's limit."""
    try:
        return proc.wait(timeout=JOB_LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        proc.wait()
        pytest.fail(f"{what} was still running after {JOB_LIMIT_S} s:\n{log.read_text()}")


def _listed(out: Path) -> int:
    """Checkpoints the folder's manifest lists; -1 before the job has written one."""
    path = out / run.MANIFEST
    if not path.exists():
        return -1
    return len(json.loads(path.read_text() or "{}").get("checkpoints", {}))


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_leaves_exactly_n_valid(original, tmp_path):
    rng = random.Random(2024)
    outcomes = []
    for trial in range(KILL_TRIALS):
        out = tmp_path / f"trial-{trial}"
        argv = job(original, out, "--budget-s", "0.2", "--hp", "epochs=100")  # runs of 0.2 s
        log = tmp_path / f"trial-{trial}-killed.log"
        proc = _start_job(argv, log)
        # the moment: a random run (its checkpoints before it saved), then a random point in
        # it or in its saving, so kills land at every stage whatever the machine's speed
        done_before = rng.randrange(N)
        deadline = time.monotonic() + JOB_LIMIT_S
        while _listed(out) < done_before:
            if proc.poll() is not None or time.monotonic() > deadline:
                _finish(proc, log, f"trial {trial}'s job, before {done_before} checkpoints")
                pytest.fail(f"trial {trial}'s job ended early:\n{log.read_text()}")
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        killed = proc.wait() == -signal.SIGKILL
        before = _listed(out)
        killed = killed and before < N  # killed mid-job

        log = tmp_path / f"trial-{trial}-resumed.log"
        code = _finish(_start_job(argv, log), log, f"trial {trial}'s resume")
        assert code == 0, log.read_text()
        assert_intact(out, N)
        outcomes.append((killed, before))
    print(f"\nkill/resume trials: {len(outcomes)}, all intact; killed mid-job "
          f"{sum(k for k, _ in outcomes)}; checkpoints before the kill: "
          f"{[b for _, b in outcomes]}")  # fmt: skip
    assert len(outcomes) == KILL_TRIALS
    assert sum(killed for killed, _ in outcomes) >= 3  # mostly mid-job
    assert len({b for _, b in outcomes}) >= 2  # at different stages


# ------------------------------------------------------------------------- corrupt files
def test_corrupt_checkpoints_are_reported_and_redone(original, tmp_path):
    out = tmp_path / "out"
    argv = job(original, out)
    assert invoke(run_main, argv)[0] == 0
    first = assert_intact(out, N)
    c0, c1 = out / "unlearned_checkpoint_0.pth", out / "unlearned_checkpoint_1.pth"
    c0.write_bytes(c0.read_bytes()[: c0.stat().st_size // 2])  # truncated
    data = bytearray(c1.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    c1.write_bytes(bytes(data))

    code, err = invoke(run_main, argv)
    assert code == 0, err
    assert err.count("does not match its checksum") == 2, err
    assert "resuming: 2 valid checkpoints kept, 2 to do" in err
    again = assert_intact(out, N)
    for i in ("2", "3"):  # untouched ones are kept as they were
        assert again["checkpoints"][i]["sha256"] == first["checkpoints"][i]["sha256"]


def _record() -> ModelRecord:
    rng = np.random.default_rng(0)
    return ModelRecord(
        forget_logits=rng.normal(size=(5, 3)).astype(np.float32),
        test_losses=rng.random(7).astype(np.float32),
        retain_accuracy=0.9, test_accuracy=0.8, forget_accuracy=1.0, seconds=1.0,
    )  # fmt: skip


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:
    """Flip one byte in every 997 of the file's second half (one byte alone may land in
    alignment padding, which is harmless and rightly goes unnoticed)."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data), 997):
        data[i] ^= 0x55
    path.write_bytes(bytes(data))


def _tamper_npz(path: Path) -> None:
    """Valid .npz, valid CRCs, the old checksum, one changed number: only the checksum tells."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["forget_logits"] = arrays["forget_logits"].copy()
    arrays["forget_logits"][0, 0] += 1.0
    np.savez(path, **arrays)


def _tamper_pt(path: Path) -> None:
    entry = torch.load(path, weights_only=True)
    entry["state_dict"]["w"] = entry["state_dict"]["w"] + 1
    torch.save(entry, path)


@pytest.mark.parametrize("damage", [_truncate, _flip, _tamper_npz], ids=lambda f: f.__name__)
def test_corrupt_cache_record_is_reported_and_rebuilt(tmp_path, capsys, damage):
    cache = ModelCache(tmp_path)
    key = cache.group({"role": "retrained"})
    cache.save(key, 3, _record())
    damage(tmp_path / key / "seed-3.npz")
    assert cache.load(key, 3) is None  # never used
    err = capsys.readouterr().err
    assert err.startswith("warning: cache entry") and "rebuilding it" in err
    assert len(cache.rejected) == 1
    cache.save(key, 3, _record())  # what the evaluator does next
    assert np.array_equal(cache.load(key, 3).forget_logits, _record().forget_logits)


@pytest.mark.parametrize("damage", [_truncate, _flip, _tamper_pt], ids=lambda f: f.__name__)
def test_corrupt_cache_weights_are_reported_and_rebuilt(tmp_path, capsys, damage):
    cache = ModelCache(tmp_path)
    key = cache.group({"role": "original"})
    weights = {"w": torch.arange(1000, dtype=torch.float32)}
    cache.save_weights(key, 0, weights)
    damage(tmp_path / key / "seed-0.pt")
    assert cache.load_weights(key, 0) is None
    assert "rebuilding it" in capsys.readouterr().err
    cache.save_weights(key, 0, weights)
    assert torch.equal(cache.load_weights(key, 0)["w"], weights["w"])


def test_cache_entries_without_a_checksum_are_not_trusted(tmp_path, capsys):
    cache = ModelCache(tmp_path)
    key = cache.group({"role": "retrained"})
    np.savez(tmp_path / key / "seed-0.npz", **_record().to_arrays())  # an older kit's entry
    torch.save({"w": torch.ones(2)}, tmp_path / key / "seed-0.pt")
    assert cache.load(key, 0) is None and cache.load_weights(key, 0) is None
    err = capsys.readouterr().err
    assert "has no checksum" in err and "is not a checksummed state dict" in err


@pytest.mark.slow
def test_local_eval_rebuilds_corrupt_cache_entries(tmp_path):
    cache_dir = tmp_path / "cache"
    argv = [*QUICK_LE, "--method", "finetune", "--budget-s", "0.2", "--cache-dir", str(cache_dir)]
    code, err = invoke(cli.main, [*argv, "--out", str(tmp_path / "a")])
    assert code == 0, err
    records = sorted(cache_dir.glob("*/seed-*.npz"))
    (weights,) = cache_dir.glob("*/seed-*.pt")
    original_record = weights.with_suffix(".npz")
    retrained = [p for p in records if p.parent != weights.parent]
    _truncate(retrained[0])
    _flip(retrained[1])
    _flip(weights)

    code, err = invoke(cli.main, [*argv, "--out", str(tmp_path / "b")])
    assert code == 0, err
    assert err.count("rebuilding it") == 3, err
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["models_trained"] == {"original": 1, "retrained": 2}
    assert original_record.exists()
    code, err = invoke(cli.main, [*argv, "--out", str(tmp_path / "c")])  # all sound again
    assert code == 0 and "rebuilding" not in err
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["models_trained"] == {"original": 0, "retrained": 0}


# ------------------------------------------------------------------------- unwritable output
@pytest.fixture
def unwritable(tmp_path):
    """An output path that cannot be created: under a read-only folder, or (as root, where
    modes restrict nothing) under a regular file."""
    if IS_ROOT:
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        yield blocker / "out", "is a file, not a folder"
    else:
        locked = tmp_path / "read-only"
        locked.mkdir()
        locked.chmod(0o500)
        yield locked / "out", "is not writable"
        locked.chmod(0o700)


def test_runner_refuses_an_unwritable_folder_before_work(original, unwritable, monkeypatch):
    out, message = unwritable

    def no_work(args):
        raise AssertionError("work started")

    monkeypatch.setattr(runner, "load_inputs", no_work)
    code, err = invoke(run_main, job(original, out))
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists()


def test_local_eval_refuses_an_unwritable_folder_before_work(unwritable, monkeypatch, tmp_path):
    import local_eval.runs.pipeline as pipeline

    out, message = unwritable

    def no_work(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(pipeline, "run_evaluation", no_work)
    argv = [*QUICK_LE, "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    code, err = invoke(cli.main, argv)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists()


# ------------------------------------------------------------------------- two jobs, one folder
def test_runner_refuses_a_folder_another_job_holds(original, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with run.lock_folder(out):  # another job, mid-way
        code, err = invoke(run_main, job(original, out))
    assert code == 2 and "another job is writing to" in err and f"pid {os.getpid()}" in err
    assert {p.name for p in out.iterdir()} == {run.LOCK}  # nothing written by the second
    assert invoke(run_main, job(original, out))[0] == 0  # free again once the first is done
    assert_intact(out, N)


def test_runner_lock_is_released_when_its_holder_dies(original, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pid = os.fork()
    if pid == 0:
        try:
            with run.lock_folder(out):
                time.sleep(60)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 10
    lock = out / run.LOCK
    while not (lock.exists() and lock.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    code, err = invoke(run_main, job(original, out))
    assert code == 2 and f"pid {pid}" in err
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert invoke(run_main, job(original, out))[0] == 0


def test_local_eval_refuses_an_out_folder_another_evaluation_holds(tmp_path, monkeypatch):
    import local_eval.runs.pipeline as pipeline

    out = tmp_path / "out"
    argv = [*QUICK_LE, "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    monkeypatch.setattr(pipeline, "run_evaluation", lambda *a, **k: pytest.fail("work started"))
    with out_lock(out):
        code, err = invoke(cli.main, argv)
    assert code == 2 and "another evaluation" in err and "is writing to --out" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # the lock file went with its holder
