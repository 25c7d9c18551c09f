"""bench.device_checks: the GPU checks' script, its staging by the deadline, and a smoke run
of every stage on a CPU with a small model."""

import json
import math
import sys
import tarfile
from pathlib import Path

import pytest

import bench.device_checks as dc
from local_eval.reporting.leaderboard import PRIVATE_LEADERBOARD, choose_methods
from local_eval.runs.competition import SETTING
from submission.methods.relearn import choose_regime

SMALL = {"dataset": "digits", "arch": "smallcnn", "recipe": "fast_smallcnn"}


def test_a_next_board_starts_only_when_its_scaled_time_fits_before_the_margin():
    # the last board took 100 s at N = 8: N = 16 is expected to take 200 s
    fits = dict(n_last=8, last_s=100.0, elapsed_s=150.0)
    assert dc.next_stage_fits(16, deadline_s=150 + 200 + dc.MARGIN_S, **fits)
    assert not dc.next_stage_fits(16, deadline_s=150 + 199 + dc.MARGIN_S, **fits)
    assert dc.next_stage_fits(32, n_last=8, last_s=10.0, elapsed_s=0.0, deadline_s=61.0)
    with pytest.raises(ValueError, match="positive"):
        dc.next_stage_fits(0, n_last=8, last_s=1.0, elapsed_s=0.0, deadline_s=10.0)


def test_the_boards_are_the_competition_setting_with_the_competitions_model_on_mnist():
    options = dc.setting_options({})
    assert options == {**SETTING, "dataset": "mnist5k", "arch": "resnet18"}
    assert dc.setting_options({"arch": "smallcnn"})["arch"] == "smallcnn"
    argv = dc.board_command(16, options, out="B", cache_dir="C", device="cuda",
                            methods=dc.board_methods())  # fmt: skip
    assert argv[:4] == [sys.executable, "-m", "local_eval", "leaderboard"]
    assert argv[-1] == "--quiet"
    pairs = dict(zip(argv[4:-1:2], argv[5:-1:2], strict=True))
    assert pairs == {
        "--dataset": "mnist5k", "--forget": "persons", "--arch": "resnet18",
        "--recipe": "organisers_face", "--trainer": "batched", "--n-models": "16",
        "--budget-s": "auto", "--device": "cuda",
        "--methods": ",".join(["relearn", *PRIVATE_LEADERBOARD]),
        "--out": "B", "--cache-dir": "C",
    }  # fmt: skip


def test_the_board_adds_relearn_forced_into_the_regime_its_rule_did_not_choose():
    entries = list(PRIVATE_LEADERBOARD)
    assert dc.board_methods() == ["relearn", *entries]
    assert dc.board_methods("perturb") == ["relearn", "relearn[regime=reset]", *entries]
    assert dc.board_methods("reset") == ["relearn", "relearn[regime=perturb]", *entries]
    # the leaderboard takes the list as it is given to it
    assert choose_methods(",".join(dc.board_methods("perturb"))) == dc.board_methods("perturb")


def test_a_stage_that_would_not_fit_is_skipped_and_said(monkeypatch, tmp_path):
    boards = []

    def fake_board(argv, *, timeout_s, log):
        boards.append((argv[argv.index("--n-models") + 1], timeout_s))
        return {"rc": 0, "timed_out": False, "seconds": 100.0}

    monkeypatch.setattr(dc, "run_board", fake_board)
    monkeypatch.setattr(dc.reset_step, "run", lambda **kw: {"rows": []})  # (the smoke run's)
    summary = dc.run_checks(tmp_path / "out", stages=(4, 8, 16), deadline_s=200.0,
                            overrides=SMALL, work=tmp_path / "work", reset_repeats=1)  # fmt: skip
    # N = 4 ran; N = 8 would take 200 s more from about 100 s in: skipped, and N = 16 not tried
    assert [n for n, _ in boards] == ["4"]
    assert 0 < boards[0][1] <= 200.0 - dc.MARGIN_S
    assert summary["boards"][-1] == {"n_models": 8, "skipped": "would not fit the deadline"}
    written = json.loads((tmp_path / "out" / "device_checks.json").read_text())
    assert written["boards"] == summary["boards"]


def test_a_finished_board_sends_its_tables_and_a_stopped_one_its_journal_as_one_file(tmp_path):
    from local_eval.cli.leaderboard import JOURNAL

    finished, stopped, out = tmp_path / "finished", tmp_path / "stopped", tmp_path / "out"
    out.mkdir()
    finished.mkdir()
    for name in ("leaderboard.md", "leaderboard.json", "leaderboard.png"):
        (finished / name).write_text(name)
    (finished / JOURNAL).mkdir()
    assert dc.collect_board(finished, out, 8) == ["board-n8.md", "board-n8.json"]
    assert (out / "board-n8.json").read_text() == "leaderboard.json"
    # stopped by the deadline: no tables, its finished evaluations in one archive
    (stopped / JOURNAL).mkdir(parents=True)
    for key in ("identity", "budget-0", "row-0-relearn"):
        (stopped / JOURNAL / f"{key}.json").write_text(json.dumps({"key": key}))
    assert dc.collect_board(stopped, out, 16) == ["board-n16-progress.tar.gz"]
    with tarfile.open(out / "board-n16-progress.tar.gz") as archive:
        names = sorted(Path(n).name for n in archive.getnames() if n.endswith(".json"))
        member = next(m for m in archive.getmembers() if m.name.endswith("row-0-relearn.json"))
        kept = json.loads(archive.extractfile(member).read())
    assert names == ["budget-0.json", "identity.json", "row-0-relearn.json"]
    assert kept == {"key": "row-0-relearn"}
    assert dc.collect_board(tmp_path / "never-started", out, 32) == []


@pytest.mark.slow
def test_every_stage_runs_on_a_cpu_and_writes_at_most_eight_files(tmp_path):
    out = tmp_path / "out"
    code = dc.main([
        "--out", str(out), "--stages", "2,3", "--deadline-s", "400", "--reset-repeats", "1",
        "--methods", "relearn,relearn[regime=perturb,perturb=0.5],finetune", "--device", "cpu",
        *[arg for name, value in SMALL.items() for arg in ("--set", f"{name}={value}")],
    ])  # fmt: skip
    assert code == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "board-n2.json", "board-n2.md", "board-n3.json", "board-n3.md",
        "device_checks.json", "device_checks.log",
    ]  # fmt: skip
    summary = json.loads((out / "device_checks.json").read_text())
    assert [row["arch"] for row in summary["reset_step"]["rows"]] == [
        arch for arch, _, _ in dc.reset_step.SHAPES
    ]
    sat = summary["saturation"]
    assert sat["setting"] == {**SETTING, **SMALL}
    assert sat["budget_s"] == pytest.approx(0.2 * sat["original_training_s"])
    assert math.isfinite(sat["held_out_median_logodds"]) and sat["estimated_reset_epochs"] > 0
    assert sat["saturated"] == (sat["held_out_median_logodds"] >= sat["reset_below_logodds"])
    assert sat["regime"] == choose_regime(
        sat["estimated_reset_epochs"],
        reset_from_epochs=sat["reset_from_epochs"],
        held_out_logodds=sat["held_out_median_logodds"],
        reset_below_logodds=sat["reset_below_logodds"],
    )
    assert [b["n_models"] for b in summary["boards"]] == [2, 3]
    assert all(b["rc"] == 0 and not b["timed_out"] for b in summary["boards"])
    board = json.loads((out / "board-n3.json").read_text())
    assert sorted(r["method"] for r in board["rows"]) == [
        "finetune", "relearn", "relearn[regime=perturb,perturb=0.5]"]  # fmt: skip
    assert summary["methods"] == ["relearn", "relearn[regime=perturb,perturb=0.5]", "finetune"]
    assert "--arch smallcnn" in (out / "device_checks.log").read_text()
