"""Scoring submitted checkpoints (``python -m local_eval --checkpoints``): the runner's
checkpoint j is the evaluator's run j, bitwise; bad checkpoints are refused up front."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from local_eval.cli.main import main as local_eval_main
from local_eval.data.setup import load_setup
from local_eval.runs import checkpoints as checkpoints_module
from local_eval.runs.checkpoints import open_checkpoints
from local_eval.runs.loading import load_unlearning
from local_eval.runs.pipeline import EvalConfig, run_evaluation
from local_eval.training.cache import ModelCache
from local_eval.training.models import build_model
from local_eval.training.train import get_recipe, train_new_model
from submission_tools.run.cli import main as run_main

N = 3
EPOCHS = 2  # the references' recipe, shortened (the same for every evaluation here)
BUDGET = "50"  # seconds per run: far above what a run takes, so no run is cut short


@contextlib.contextmanager
def one_thread():
    """The evaluator runs at --threads 1; the in-process runner must too, for equal floats."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """An original (a file, as a user has one), and N checkpoints the runner wrote from it."""
    root = tmp_path_factory.mktemp("checkpoints")
    setup = load_setup("digits")
    trained = train_new_model(
        "smallcnn", setup.train, setup.val, get_recipe("fast_smallcnn", epochs=2),
        num_classes=10, device="cpu", seed=1,
    )  # fmt: skip
    original = root / "original.pth"
    torch.save(trained.model.state_dict(), original)
    out = root / "runner"
    argv = ["--data", "digits", "--original", str(original), "--method", "finetune",
            "--n", str(N), "--budget-s", BUDGET, "--out", str(out), "--zip"]  # fmt: skip
    with one_thread(), contextlib.redirect_stderr(io.StringIO()):
        assert run_main(argv) == 0
    return {"root": root, "original": original, "folder": out, "zip": out / "submission.zip"}


def evaluate(source, made, **config):
    config = EvalConfig(
        n_models=N, recipe_overrides={"epochs": EPOCHS}, workers=1, threads=1,
        original=str(made["original"]), **config,
    )  # fmt: skip
    return run_evaluation(config, source, cache=ModelCache(made["root"] / "cache"), progress=False)


@pytest.mark.slow
def test_runner_checkpoints_score_as_the_evaluators_own_runs_bitwise(made):
    ran = evaluate(load_unlearning(method="finetune"), made, budget_s=float(BUDGET))
    for source in (made["folder"], made["zip"]):
        scored = evaluate(open_checkpoints(source), made)
        for field in ("forget_logits", "test_losses", "retain_accuracy", "test_accuracy"):
            assert np.array_equal(
                getattr(scored.signals.unlearned, field), getattr(ran.signals.unlearned, field)
            ), (source, field)
        # the references are the same models (cached under the original's hash), read back
        assert np.array_equal(scored.signals.retrained.forget_logits,
                              ran.signals.retrained.forget_logits)  # fmt: skip
        assert scored.trained == {"original": 0, "retrained": 0}
        assert scored.method["source"] == f"checkpoints:{source}"
    # seconds: the runner's manifest's, for the folder and for the zip beside it
    manifest = json.loads((made["folder"] / "manifest.json").read_text())
    recorded = [manifest["checkpoints"][str(j)]["seconds"] for j in range(N)]
    for source in (made["folder"], made["zip"]):
        seconds = evaluate(open_checkpoints(source), made).signals.unlearned.seconds
        assert seconds.tolist() == pytest.approx(recorded), source


def test_the_references_are_cached_under_the_originals_hash(made, tmp_path):
    """Another original: other references (trained again); the same one: read back. (The
    zip alone: the manifest beside the runner's would refuse the other original.)"""
    cache = ModelCache(tmp_path / "cache")
    bare = shutil.copy(made["zip"], tmp_path / "submission.zip")
    other = tmp_path / "other.pth"
    state = torch.load(made["original"], weights_only=True)
    state[next(iter(state))] += 1
    torch.save(state, other)

    def trained(original):
        config = EvalConfig(n_models=N, recipe_overrides={"epochs": EPOCHS}, workers=1,
                            threads=1, original=str(original))  # fmt: skip
        result = run_evaluation(config, open_checkpoints(bare), cache=cache, progress=False)
        return result.trained["retrained"]

    assert trained(made["original"]) == 2 * N
    assert trained(made["original"]) == 0
    assert trained(other) == 2 * N


def score(made, tmp_path, *args, original=True) -> tuple[int, str, Path]:
    out = tmp_path / "report"
    argv = ["--epochs", str(EPOCHS), "--workers", "1", "--cache-dir", str(made["root"] / "cache"),
            "--out", str(out), "--quiet", *args]  # fmt: skip
    if original:
        argv += ["--original", str(made["original"])]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = local_eval_main(argv)
    return code, err.getvalue(), out


def assert_refused(result, message):
    code, err, out = result
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err and not out.exists()


def folder_of(made, tmp_path, *, keep=range(N), manifest=True) -> Path:
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for j in keep:
        shutil.copy(made["folder"] / f"unlearned_checkpoint_{j}.pth", folder)
    if manifest:
        shutil.copy(made["folder"] / "manifest.json", folder)
    return folder


def zip_of(tmp_path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "submission.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def checkpoint_bytes(made, j=0) -> bytes:
    return (made["folder"] / f"unlearned_checkpoint_{j}.pth").read_bytes()


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_a_wrong_count_is_refused(made, tmp_path):
    assert_refused(score(made, tmp_path, "--checkpoints", str(made["folder"]), "--n-models", "5"),
                   "holds 3 checkpoint(s), not 5 (--n-models)")  # fmt: skip


def test_a_folder_with_only_the_zip_points_at_the_zip(made, tmp_path):
    folder = tmp_path / "working"  # what a notebook leaves: the zip and its manifest
    folder.mkdir()
    shutil.copy(made["zip"], folder)
    shutil.copy(made["folder"] / "manifest.json", folder)
    assert_refused(score(made, tmp_path, "--checkpoints", str(folder)),
                   f"holds 0 checkpoint(s): the score needs 2 or more (give the zip in it "
                   f"instead: --checkpoints {folder / 'submission.zip'})")  # fmt: skip


def test_a_missing_index_is_refused(made, tmp_path):
    folder = folder_of(made, tmp_path, keep=(0, 2), manifest=False)
    assert_refused(score(made, tmp_path, "--checkpoints", str(folder)),
                   "unlearned_checkpoint_1.pth is missing")  # fmt: skip


def test_another_architecture_or_key_set_is_refused(made, tmp_path):
    resnet = build_model("resnet18", num_classes=10, in_channels=1, image_size=8).state_dict()
    state = torch.load(made["folder"] / "unlearned_checkpoint_1.pth", weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    path = zip_of(tmp_path, {"unlearned_checkpoint_0.pth": saved(resnet),
                             "unlearned_checkpoint_1.pth": checkpoint_bytes(made, 1)})  # fmt: skip
    assert_refused(score(made, tmp_path, "--checkpoints", str(path)),
                   "checkpoint unlearned_checkpoint_0.pth is not a state dict of the original's")
    path.unlink()
    path = zip_of(tmp_path, {"unlearned_checkpoint_0.pth": checkpoint_bytes(made, 0),
                             "unlearned_checkpoint_1.pth": saved(state)})  # fmt: skip
    assert_refused(score(made, tmp_path, "--checkpoints", str(path)),
                   "unexpected keys: extra.weight")  # fmt: skip


class Evil:
    def __reduce__(self):
        return (print, ("this ran: a checkpoint executed code",))


def test_a_checkpoint_that_fails_weights_only_loading_is_refused(made, tmp_path, capsys):
    folder = folder_of(made, tmp_path, keep=(0, 1), manifest=False)
    (folder / "unlearned_checkpoint_1.pth").write_bytes(saved({"w": Evil()}))
    assert_refused(score(made, tmp_path, "--checkpoints", str(folder)),
                   "refused to load checkpoint")  # fmt: skip
    assert "this ran" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "name",
    [
        "../unlearned_checkpoint_0.pth",
        "/abs/unlearned_checkpoint_0.pth",
        "C:unlearned_checkpoint_0.pth",
    ],
)
def test_unsafe_zip_member_names_are_refused(made, tmp_path, name):
    path = zip_of(tmp_path, {name: checkpoint_bytes(made), "unlearned_checkpoint_1.pth": b"x"})
    assert_refused(score(made, tmp_path, "--checkpoints", str(path)), "refused member")


def test_the_competitions_zip_layout_is_accepted_and_strangers_are_not(made, tmp_path):
    members = {
        f"kaggle/tmp/unlearned_checkpoint_{j}.pth": checkpoint_bytes(made, j) for j in range(N)
    }
    found = open_checkpoints(zip_of(tmp_path, members))
    assert found.names == tuple(members)
    (tmp_path / "submission.zip").unlink()
    assert_refused(score(made, tmp_path, "--checkpoints",
                         str(zip_of(tmp_path, {**members, "notes.txt": b"hi"}))),
                   "unexpected member 'notes.txt'")  # fmt: skip


def test_a_zip_bomb_is_refused_by_the_bytes_it_inflates_to(made, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints_module, "MAX_MEMBER_BYTES", 10_000)
    path = tmp_path / "submission.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("unlearned_checkpoint_0.pth", b"\0" * 50_000)  # compresses to ~100 B
        archive.writestr("unlearned_checkpoint_1.pth", checkpoint_bytes(made))
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("unlearned_checkpoint_0.pth").compress_size < 1_000
    assert_refused(score(made, tmp_path, "--checkpoints", str(path)),
                   "unlearned_checkpoint_0.pth is over 9.77 KiB uncompressed")  # fmt: skip
    monkeypatch.setattr(checkpoints_module, "MAX_MEMBER_BYTES", 1 << 30)
    monkeypatch.setattr(checkpoints_module, "MAX_TOTAL_BYTES", 40_000)
    assert_refused(score(made, tmp_path, "--checkpoints", str(path)), "uncompressed (the limit")


def test_nan_weights_are_refused(made, tmp_path):
    state = torch.load(made["folder"] / "unlearned_checkpoint_0.pth", weights_only=True)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first][0] = float("nan")
    path = zip_of(tmp_path, {"unlearned_checkpoint_0.pth": saved(state),
                             "unlearned_checkpoint_1.pth": checkpoint_bytes(made, 1)})  # fmt: skip
    assert_refused(score(made, tmp_path, "--checkpoints", str(path)), f"NaN/inf values in {first}")


def test_a_manifest_of_other_data_or_another_original_is_refused(made, tmp_path):
    folder = folder_of(made, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["data_fingerprint"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert_refused(score(made, tmp_path, "--checkpoints", str(folder)),
                   "were made by another job: its manifest.json names data fingerprint 000000")
    other = tmp_path / "other.pth"
    state = torch.load(made["original"], weights_only=True)
    state[next(iter(state))] += 1
    torch.save(state, other)
    code, err, out = score(made, tmp_path, "--checkpoints", str(made["folder"]),
                           "--original", str(other), original=False)  # fmt: skip
    assert_refused((code, err, out), "original model sha256")


def recorded_seconds(made) -> list[float]:
    manifest = json.loads((made["folder"] / "manifest.json").read_text())
    return [manifest["checkpoints"][str(j)]["seconds"] for j in range(N)]


def test_a_zip_takes_the_runners_manifest_beside_it_only_when_it_records_its_files(made, tmp_path):
    beside = open_checkpoints(made["zip"])
    assert [beside.seconds(j) for j in range(N)] == recorded_seconds(made)
    assert beside.manifest is not None and beside.notes == ()
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(made["zip"], alone)
    bare = open_checkpoints(alone / "submission.zip")
    assert bare.manifest is None and bare.notes == ()
    assert all(np.isnan(bare.seconds(j)) for j in range(N))
    # a manifest of other checkpoints (another run's) beside the zip: ignored, and said so
    manifest = json.loads((made["folder"] / "manifest.json").read_text())
    manifest["checkpoints"]["1"]["sha256"] = "0" * 64
    (alone / "manifest.json").write_text(json.dumps(manifest))
    other = open_checkpoints(alone / "submission.zip")
    assert other.manifest is None and all(np.isnan(other.seconds(j)) for j in range(N))
    assert len(other.notes) == 1 and "records other checkpoints than submission.zip" in \
        other.notes[0]  # fmt: skip
    (alone / "manifest.json").write_text("{not json")
    assert "is unreadable" in open_checkpoints(alone / "submission.zip").notes[0]


def test_a_zips_manifest_of_other_data_is_refused(made, tmp_path):
    folder = tmp_path / "zipped"
    folder.mkdir()
    shutil.copy(made["zip"], folder)
    manifest = json.loads((made["folder"] / "manifest.json").read_text())
    manifest["data_fingerprint"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    refused = score(made, tmp_path, "--checkpoints", str(folder / "submission.zip"))
    assert_refused(refused, "were made by another job: its manifest.json names data fingerprint")


def test_a_checkpoint_changed_after_the_run_has_no_recorded_seconds(made, tmp_path):
    folder = folder_of(made, tmp_path)
    shutil.copy(folder / "unlearned_checkpoint_0.pth", folder / "unlearned_checkpoint_2.pth")
    found = open_checkpoints(folder)
    assert [found.seconds(j) for j in (0, 1)] == recorded_seconds(made)[:2]
    assert np.isnan(found.seconds(2))


def test_checkpoints_exclude_a_submission(made, tmp_path):
    assert_refused(score(made, tmp_path, "--checkpoints", str(made["folder"]), "--method", "scrub"),
                   "--checkpoints scores what a submission wrote: drop --method")  # fmt: skip
