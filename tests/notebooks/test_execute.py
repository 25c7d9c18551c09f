"""Built notebooks executed end to end in a real kernel, against the stub inputs."""

import hashlib
import json
import re
import shutil
import time
import zipfile

import nbformat
import pytest
import torch
import torchvision

from notebooks import build_kaggle_notebook

pytestmark = pytest.mark.slow

# A user's file as a competitor would write it: no budget_s, no kit imports.
USER_SUBMISSION = '''
import torch


def unlearning(net, retain_loader, forget_loader, val_loader):
    """One SGD step on a retain batch: enough to change the weights."""
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    batch = next(iter(retain_loader))
    net.train()
    loss = torch.nn.functional.cross_entropy(net(batch["image"]), batch["age_group"])
    loss.backward()
    optimizer.step()
    net.eval()
'''


def _dirs(tmp_path):
    work, tmp = tmp_path / "working", tmp_path / "kaggle_tmp"
    work.mkdir()
    return work, tmp


def _env(input_dir, work, tmp, n, **extra):
    return {"UNLEARN_INPUT_DIR": input_dir, "UNLEARN_WORK_DIR": work, "UNLEARN_TMP_DIR": tmp,
            "UNLEARN_N": n, "UNLEARN_ALLOW_CPU": "1", **extra}


def _outputs(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))


def _check_submission(work, tmp, n):
    names = {f"unlearned_checkpoint_{i}.pth" for i in range(n)}
    assert {p.name for p in tmp.iterdir()} == names
    with zipfile.ZipFile(work / "submission.zip") as zf:
        members = zf.namelist()
    # Named like the template's `zip submission.zip /kaggle/tmp/*.pth`: absolute path minus '/'.
    assert sorted(members) == sorted(str(tmp / name).lstrip("/") for name in names)
    for name in names:
        net = torchvision.models.resnet18(weights=None, num_classes=10)
        net.load_state_dict(torch.load(tmp / name, weights_only=True))
    return members


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_method_notebook_writes_n_checkpoints_and_zip(execute, stub_dir, tmp_path):
    nb = build_kaggle_notebook(method="finetune")
    nbformat.validate(nb)
    work, tmp = _dirs(tmp_path)
    nb = execute(nb, tmp_path, **_env(stub_dir, work, tmp, 3, UNLEARN_TIME_LIMIT_H="0.02"))
    _check_submission(work, tmp, 3)
    assert sorted(p.name for p in work.iterdir()) == ["manifest.json", "submission.zip"]
    # the manifest beside the zip: each checkpoint's bytes, its seconds, the original
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["n"] == 3 and manifest["original_sha256"] == _sha256(
        stub_dir / "original_model.pth")
    for j in range(3):
        entry = manifest["checkpoints"][str(j)]
        assert entry["file"] == f"unlearned_checkpoint_{j}.pth"
        assert entry["sha256"] == _sha256(tmp / entry["file"]) and entry["seconds"] > 0
    out = _outputs(nb)
    assert "run 3/3" in out and "granted" in out
    # each call is granted at most 90% of the 20% cut-off of a retraining timed in the notebook
    found = re.search(r"one retraining here: about ([\d.]+) s .*at most ([\d.]+) s", out)
    assert found, out
    retrain_s, cap = map(float, found.groups())
    assert cap == pytest.approx(0.9 * 0.2 * retrain_s, rel=0.02, abs=0.06)
    granted = [float(g) for g in re.findall(r"granted ([\d.]+) s", out)]
    assert len(granted) == 3 and max(granted) <= max(cap, 1.0) + 0.05  # 1 s: the floor
    # The checkpoints differ from the original: unlearning ran.
    original = torch.load(stub_dir / "original_model.pth", weights_only=True)
    changed = torch.load(tmp / "unlearned_checkpoint_0.pth", weights_only=True)
    assert any(not torch.equal(original[k], changed[k]) for k in original)


def test_the_cutoff_cap_can_be_turned_off(execute, stub_dir, tmp_path):
    work, tmp = _dirs(tmp_path)
    nb = execute(build_kaggle_notebook(method="finetune"), tmp_path,
                 **_env(stub_dir, work, tmp, 1, UNLEARN_CUTOFF="0", UNLEARN_TIME_LIMIT_H="0.01"))
    out = _outputs(nb)
    assert "one retraining here" not in out
    granted = float(re.search(r"granted ([\d.]+) s", out).group(1))
    assert granted > 20  # the time limit's share: 36 s less the safety share and overheads


def test_the_notebooks_zip_is_scored_by_the_evaluator(execute, tmp_path):
    """What a notebook wrote is what the organisers scored: its submission.zip (members under
    kaggle/tmp/, as the template's zip writes them), against the folder's own original."""
    from data_stubs import StubConfig, make_stub
    from local_eval.cli.main import main as local_eval_main

    # the round trip's stub (tests/notebooks/test_round_trip.py): test persons enough for the
    # references to learn something, which the score requires
    stub_dir = make_stub(
        tmp_path / "stubs",
        StubConfig(n_persons=12, n_forget_persons=2, n_val_persons=6, images_per_person=4),
    )
    work, tmp = _dirs(tmp_path)
    execute(build_kaggle_notebook(method="finetune"), tmp_path,
            **_env(stub_dir, work, tmp, 2, UNLEARN_TIME_LIMIT_H="0.02"))  # fmt: skip
    out = tmp_path / "report"
    code = local_eval_main([
        "--checkpoints", str(work / "submission.zip"), "--dataset", f"kaggle:{stub_dir}",
        "--epochs", "1", "--workers", "1", "--threads", "1", "--quiet",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_models"] == 2 and report["method"]["source"].startswith("checkpoints:")
    assert 0.0 <= report["forget_quality"] <= 1.0
    # the seconds are the notebook's, from the manifest it left beside the zip
    seconds = json.loads((work / "manifest.json").read_text())["checkpoints"]
    assert report["time"]["unlearning_s_mean"] == pytest.approx(
        (seconds["0"]["seconds"] + seconds["1"]["seconds"]) / 2)
    # the zip alone (downloaded without it) is scored too, without seconds
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(work / "submission.zip", alone)
    code = local_eval_main([
        "--checkpoints", str(alone / "submission.zip"), "--dataset", f"kaggle:{stub_dir}",
        "--epochs", "1", "--workers", "1", "--threads", "1", "--quiet",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "report-alone"),
    ])  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "report-alone" / "report.json").read_text())
    assert report["time"]["unlearning_s_mean"] is None


def test_user_submission_without_budget_runs(execute, stub_dir, tmp_path):
    path = tmp_path / "my_submission.py"
    path.write_text(USER_SUBMISSION)
    work, tmp = _dirs(tmp_path)
    nb = execute(build_kaggle_notebook(submission_file=path), tmp_path,
                 **_env(stub_dir, work, tmp, 2))
    _check_submission(work, tmp, 2)
    assert "takes no budget_s" in _outputs(nb)


RETURNING_SUBMISSION = '''
import copy

import torch


def unlearning(net, retain_loader, forget_loader, val_loader):
    """Returns a changed copy and leaves net as it was."""
    model = copy.deepcopy(net)
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    return model
'''


def test_a_returned_model_is_the_checkpoint(execute, stub_dir, tmp_path):
    """As in the kit's evaluator and runner: the model unlearning() returns is saved."""
    path = tmp_path / "returning.py"
    path.write_text(RETURNING_SUBMISSION)
    work, tmp = _dirs(tmp_path)
    execute(build_kaggle_notebook(submission_file=path), tmp_path, **_env(stub_dir, work, tmp, 1))
    original = torch.load(stub_dir / "original_model.pth", weights_only=True)
    saved = torch.load(tmp / "unlearned_checkpoint_0.pth", weights_only=True)
    assert torch.equal(saved["fc.bias"], original["fc.bias"] + 1.0)
    assert torch.equal(saved["fc.weight"], original["fc.weight"])


def test_mock_input_writes_only_an_empty_zip(execute, mock_dir, tmp_path):
    work, tmp = _dirs(tmp_path)
    start = time.perf_counter()
    execute(build_kaggle_notebook(method="finetune"), tmp_path, **_env(mock_dir, work, tmp, 512))
    assert time.perf_counter() - start < 60  # nothing heavy: 512 runs would take far longer
    assert [p.name for p in work.iterdir()] == ["submission.zip"]
    with zipfile.ZipFile(work / "submission.zip") as zf:
        assert zf.namelist() == []
    assert not tmp.exists()


def test_refuses_cpu_unless_allowed(execute, mock_dir, tmp_path):
    from nbclient.exceptions import CellExecutionError

    work, tmp = _dirs(tmp_path)
    env = _env(mock_dir, work, tmp, 1)
    env["UNLEARN_ALLOW_CPU"] = "0"
    env["CUDA_VISIBLE_DEVICES"] = ""  # the kernel sees no GPU, also on a machine that has one
    with pytest.raises(CellExecutionError, match="No GPU found"):
        execute(build_kaggle_notebook(method="finetune"), tmp_path, **env)
    assert not (work / "submission.zip").exists()
