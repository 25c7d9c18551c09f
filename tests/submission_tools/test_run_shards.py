"""``python -m submission.run --shard i/K`` and ``merge``: K folders put together equal the
unsharded job's folder (same checkpoints, a manifest the unsharded command resumes)."""

import json
import shutil
import zipfile

import pytest
import torch

from local_eval.common.errors import UsageError
from local_eval.training.models import build_model
from submission_tools.run.cli import main
from submission_tools.run.merge import merge

N = 4


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """The unsharded job and shards 0/2, 1/2 (N = 4 checkpoints on digits)."""
    root = tmp_path_factory.mktemp("run-shards")
    torch.manual_seed(0)
    original = root / "original.pth"
    torch.save(build_model("smallcnn", num_classes=10, in_channels=1, image_size=8).state_dict(),
               original)  # fmt: skip

    def job(out, *extra):
        argv = ["--data", "digits", "--arch", "smallcnn", "--original", str(original),
                "--method", "random_label", "--hp", "epochs=1", "--n", str(N),
                "--cutoff", "0",  # a budget no timing moves: the checkpoints must be equal
                "--out", str(out), *extra]  # fmt: skip
        assert main(argv) == 0
        return argv

    root_argv = job(root / "whole")
    for i in range(2):
        job(root / f"s{i}", "--shard", f"{i}/2")
    job(root / "other", "--shard", "1/2", "--hp", "epochs=2")  # the later --hp wins
    return root, root_argv


def states(folder):
    return [torch.load(folder / f"unlearned_checkpoint_{j}.pth", weights_only=True)
            for j in range(N)]  # fmt: skip


@pytest.mark.slow
def test_merged_shards_equal_the_unsharded_job(jobs, capsys):
    root, whole_argv = jobs
    assert sorted(p.name for p in (root / "s1").glob("*.pth")) == [
        "unlearned_checkpoint_1.pth", "unlearned_checkpoint_3.pth"
    ]  # fmt: skip
    merged = root / "m"
    assert main(["merge", str(root / "s1"), str(root / "s0"), "--out", str(merged), "--zip"]) == 0
    for a, b in zip(states(root / "whole"), states(root / "m"), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((root / "m" / "manifest.json").read_text())
    assert sorted(manifest["checkpoints"], key=int) == ["0", "1", "2", "3"]
    assert "shard" not in manifest
    with zipfile.ZipFile(root / "m" / "submission.zip") as archive:
        assert len(archive.namelist()) == N
    capsys.readouterr()
    # the unsharded command accepts the merged folder as its own: nothing left to do
    out_index = whole_argv.index("--out") + 1
    assert main([*whole_argv[:out_index], str(root / "m"), *whole_argv[out_index + 1:]]) == 0
    assert f"all {N} checkpoints were already there" in capsys.readouterr().err


@pytest.mark.slow
def test_merge_refuses_what_is_not_one_whole_job(jobs, tmp_path):
    root, _ = jobs
    s0, s1, other = root / "s0", root / "s1", root / "other"
    cases = [
        ([s0], "missing shard(s) 1/2: run the job with --shard 1/2"),
        ([s0, s1, s0], "shard 0/2 given twice"),
        ([s0, other], "are folders of different jobs (hyperparameters differ)"),
        ([s0, root / "whole"], "is a shard of 2,"),
        ([s0, tmp_path], "holds no manifest.json"),
    ]
    for folders, message in cases:
        with pytest.raises(UsageError) as info:
            merge(folders, tmp_path / "out")
        assert message in str(info.value)
        assert not (tmp_path / "out").exists()

    damaged = shutil.copytree(s1, tmp_path / "damaged")
    (damaged / "unlearned_checkpoint_3.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="1 of its 2 checkpoints missing or damaged"):
        merge([s0, damaged], tmp_path / "out")

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(UsageError, match="is not empty"):
        merge([s0, s1], busy)
    assert [p.name for p in busy.iterdir()] == ["mine.txt"]
