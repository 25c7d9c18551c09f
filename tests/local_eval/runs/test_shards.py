"""Sharded evaluations: K shard folders merged give the unsharded run's signals and scores;
merge refuses anything else with a message saying what to run (one-line CLI errors for the
usual mistakes are in tests/test_bad_input.py)."""

import json
import shutil

import numpy as np
import pytest

from local_eval.cli.main import main
from local_eval.runs.jobs import Shard
from local_eval.runs.shards import check_shard_folder, merge_shards, read_shard

# N = 3 so the two shards get uneven shares of the roles; no budget (--budget-s none, not the
# default auto): the method's full recipe, so a run does not depend on how busy the machine is
OPTIONS = ["--budget-s", "none", "--n-models", "3", "--epochs", "1", "--workers", "1",
           "--threads", "1", "--quiet",
           "--method", "finetune"]  # fmt: skip


def run(*argv) -> None:
    code = main([str(a) for a in argv])
    assert code == 0, argv


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The unsharded run and shards 0/2, 1/2, each training its own models (no cache)."""
    root = tmp_path_factory.mktemp("sharded")
    run(*OPTIONS, "--no-cache", "--out", root / "whole")
    for i in range(2):
        run("shard", "--shard", f"{i}/2", *OPTIONS, "--no-cache", "--out", root / f"s{i}")
    return root


def signal_arrays(folder):
    with np.load(folder / "signals.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files if not k.endswith("__seconds")}


@pytest.mark.slow
def test_merged_shards_equal_the_unsharded_run(runs, capsys):
    run("merge", runs / "s1", runs / "s0", "--out", runs / "merged")  # any order
    assert "2 shards merged" in capsys.readouterr().out
    whole, merged = signal_arrays(runs / "whole"), signal_arrays(runs / "merged")
    assert whole.keys() == merged.keys() and len(whole) == 26
    for name in whole:
        assert np.array_equal(whole[name], merged[name]), name
    a = json.loads((runs / "whole" / "report.json").read_text())
    b = json.loads((runs / "merged" / "report.json").read_text())
    for key in ("score", "forget_quality", "forget_quality_ci95", "ceiling", "floor",
                "accuracy", "utility", "epsilon", "n_models", "data", "recipe"):  # fmt: skip
        assert a[key] == b[key], key
    assert 0 < b["forget_quality"] < 1 and b["shards"] == 2 and a["shards"] == 1
    # each shard trained the original for its unlearning runs: 2 + the floor's other 2
    assert b["models_trained"] == {"original": 4, "retrained": 6}
    assert (runs / "merged" / "per_example.csv").read_text() == (
        runs / "whole" / "per_example.csv"
    ).read_text()


@pytest.mark.slow
def test_shard_manifest_says_how_it_was_made(runs):
    part, manifest = read_shard(runs / "s0")
    assert part.shard == Shard(0, 2) and manifest["shard"] == "0/2"
    assert manifest["jobs"] == ["unlearning:0", "unlearning:2", "retrained:1", "retrained:3",
                                "retrained:5", "original:1"]  # fmt: skip
    assert manifest["identity"]["method"]["name"] == "finetune"
    assert manifest["identity"]["recipe"]["epochs"] == 1
    assert manifest["command"][:2] == ["--shard", "0/2"]
    assert len(manifest["original_sha256"]) == 64
    assert part.records[part.jobs()[0]].forget_logits.shape == (126, 10)


@pytest.mark.slow
def test_merge_refuses_damaged_unfinished_and_diverged_shards(runs, tmp_path):
    s0, s1 = (shutil.copytree(runs / f"s{i}", tmp_path / f"s{i}") for i in range(2))

    records = s1 / "records.npz"
    data = bytearray(records.read_bytes())
    data[len(data) // 2] ^= 0xFF
    records.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"s1/records.npz (does not match its checksum|cannot be)"):
        merge_shards([s0, s1])
    with pytest.raises(ValueError, match=r"--shard 1/2 .*--out SHARD_DIR"):  # what to rerun
        merge_shards([s0, s1])

    shutil.copy(runs / "s1" / "records.npz", records)
    manifest = json.loads((s1 / "manifest.json").read_text())
    manifest["original_sha256"] = "0" * 64  # as two GPUs training the original would give
    (s1 / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"different original models.*local_eval prepare"):
        merge_shards([s0, s1])

    (s1 / "manifest.json").unlink()
    with pytest.raises(ValueError, match="s1 is not a finished shard folder"):
        merge_shards([s0, s1])


def test_a_shard_folder_never_overwrites_what_is_not_its_own(tmp_path):
    check_shard_folder(tmp_path / "new", Shard(0, 2))  # absent: fine
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "manifest.json").write_text('{"my": "notes"}')
    with pytest.raises(ValueError, match=r"not a shard manifest of this kit.*another --out"):
        check_shard_folder(theirs, Shard(0, 2))
    (theirs / "manifest.json").unlink()
    (theirs / "records.npz").write_text("my data")
    with pytest.raises(ValueError, match=r"records\.npz that no shard wrote"):
        check_shard_folder(theirs, Shard(0, 2))
    assert (theirs / "records.npz").read_text() == "my data"

    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"format": "unlearning-kit-shard-1",
                                                     "shard": "1/2"}))  # fmt: skip
    with pytest.raises(ValueError, match="already holds shard 1/2, not 0/2"):
        check_shard_folder(other, Shard(0, 2))
    check_shard_folder(other, Shard(1, 2))  # its own shard again: recomputed in place


@pytest.mark.slow
def test_prepare_puts_the_original_in_the_cache_for_the_shards(tmp_path, capsys):
    cache = ["--cache-dir", tmp_path / "cache"]
    run("prepare", *OPTIONS, *cache)
    assert "original model trained: weights sha256" in capsys.readouterr().out
    run("prepare", *OPTIONS, *cache)
    out = capsys.readouterr().out
    assert "original model found in the cache" in out
    digest = out.split("sha256 ")[1][:16]
    run("shard", "--shard", "0/2", *OPTIONS, *cache, "--out", tmp_path / "s0")
    manifest = json.loads((tmp_path / "s0" / "manifest.json").read_text())
    assert manifest["original_sha256"].startswith(digest)
    assert manifest["models_trained"]["original"] == 1  # original:1 only; original:0 found


def test_a_shard_refuses_a_budget_each_machine_would_time_for_itself(tmp_path, capsys):
    argv = ["shard", "--shard", "0/2", *OPTIONS, "--budget-s", "retime", "--out", tmp_path]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "retime times the machine each shard runs on" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written
