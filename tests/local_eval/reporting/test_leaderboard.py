"""The leaderboard: ranking and its CI column (synthetic rows), and a real board on digits."""

import dataclasses
import json
import math
import re
import time

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, spearmanr

import submission
from local_eval.cli.main import main
from local_eval.reporting import leaderboard
from local_eval.reporting.leaderboard import (
    Row,
    combine_repeats,
    competition_agreement,
    default_vs_entries,
    distinct_notes,
    evaluate_methods,
    format_markdown,
    lead_holds,
    lead_holds_paired,
    leader_ahead,
    rank,
    repeat_order,
    repeat_summary,
    resolution,
    row_from_report,
    to_json,
    versus_leader,
)
from local_eval.reporting.report import paired_bootstrap
from local_eval.runs.pipeline import EvalConfig


def scored(name, score, low, high, **kw):
    defaults = dict(
        forget_quality=score,
        fraction_of_ceiling=score / 0.5,
        retain_ratio=1.0,
        test_ratio=1.0,
        seconds_per_run=0.3,
        ratio_to_retraining=0.1,
        runs_over_budget=0,
    )
    return Row(name, score=score, score_ci95=(low, high), **{**defaults, **kw})


def test_rank_orders_by_score_with_failed_last():
    rows = [
        Row("zeta", error="boom"),
        scored("b", 0.20, 0.15, 0.25),
        scored("a", 0.30, 0.26, 0.34),
        Row("alpha", error="NaN"),
        scored("c", 0.20, 0.10, 0.30, forget_quality=0.25),  # tie on score: higher F first
    ]
    assert [r.method for r in rank(rows)] == ["a", "c", "b", "alpha", "zeta"]


def test_lead_holds_only_when_intervals_separate():
    apart = rank([scored("a", 0.30, 0.26, 0.34), scored("b", 0.20, 0.15, 0.25)])
    assert lead_holds(apart) is True
    assert versus_leader(apart) == ["lead holds", "below leader"]

    close = rank(
        [
            scored("a", 0.30, 0.22, 0.38),
            scored("b", 0.25, 0.20, 0.30),  # overlaps the leader
            scored("c", 0.10, 0.05, 0.21),  # entirely below the leader's low end
            Row("d", error="raised"),
        ]
    )
    assert lead_holds(close) is False
    assert versus_leader(close) == ["within CIs", "overlaps leader", "below leader", ""]

    # the lead is judged against the runner-up; a lower-ranked method with a wider
    # interval may still overlap the leader, and the column says so
    wide = rank(
        [
            scored("a", 0.30, 0.27, 0.33),
            scored("b", 0.20, 0.18, 0.22),
            scored("c", 0.10, 0.00, 0.35),
        ]
    )
    assert lead_holds(wide) is True
    assert versus_leader(wide) == ["lead holds", "below leader", "overlaps leader"]


def test_fewer_than_two_scored_rows():
    ranked = rank([scored("a", 0.3, 0.2, 0.4), Row("b", error="x")])
    assert lead_holds(ranked) is None
    assert versus_leader(ranked) == ["", ""]
    assert "Fewer than two methods scored" in format_markdown(ranked, {})


def test_markdown_marks_default_and_failed_and_states_the_setup():
    ranked = rank(
        [
            scored("a", 0.30, 0.22, 0.38),
            scored("mine", 0.25, 0.20, 0.30, default=True),
            Row("broken", error="unlearning run 1/3 raised RuntimeError: a | b"),
        ]
    )
    meta = {
        "title": "digits, forget random:0.1",
        "command": "python -m local_eval leaderboard --n-models 3",
        "machine": "2 CPU cores, torch 2.x, device cpu",
        "n_models": 3,
        "budget_s": 0.5,
        "date": "2024-01-01 00:00 UTC",
    }
    text = format_markdown(ranked, meta)
    lines = text.splitlines()
    assert "`python -m local_eval leaderboard --n-models 3`" in text
    assert "2 CPU cores, torch 2.x, device cpu" in text
    assert "N = 3 models per group; budget 0.5 s per run; 2024-01-01" in text
    table = [line for line in lines if line.startswith("| ")][1:]  # without the header
    assert table[0].startswith("| 1 | `a` | 0.300 [0.220, 0.380] |")
    assert table[0].endswith("| within CIs |  |")
    assert table[1].startswith("| 2 | `mine` (default) |")
    assert table[1].endswith("| overlaps leader | +0.050 [n/a] |")  # no per-example scores
    failed = "| - | `broken` | **failed**: unlearning run 1/3 raised RuntimeError: a \\| b |"
    assert table[2].startswith(failed)
    assert all(line.count("|") - line.count("\\|") == 12 for line in table)  # 11 columns
    assert "does not hold beyond the separate 95% CIs: 1 method(s) overlap" in text
    assert "default method `mine` ranks 2" in text

    data = to_json(ranked, meta)
    assert data["lead_holds_beyond_ci"] is False
    assert data["lead_holds_paired"] is None  # the rows carry no per-example scores
    assert [(r["rank"], r["method"], r["vs_leader"]) for r in data["rows"]] == [
        (1, "a", "within CIs"),
        (2, "mine", "overlaps leader"),
        (None, "broken", None),
    ]


def test_paired_interval_tells_apart_what_separate_intervals_cannot():
    # Two methods on the same 200 examples: per-example values vary a lot (hard and easy
    # examples) but B is always 0.02 below A, plus small noise. Separately their intervals
    # overlap; paired, the lead is clearly above 0.
    rng = np.random.default_rng(0)
    base = rng.uniform(0.0, 0.4, size=200)
    a = base + 0.01
    b = base - 0.01 + rng.normal(0.0, 0.005, size=200)
    rows = [
        scored("a", a.mean(), a.mean() - 0.03, a.mean() + 0.03, example_scores=a),
        scored("b", b.mean(), b.mean() - 0.03, b.mean() + 0.03, example_scores=b),
        scored("c", 0.01, 0.0, 0.02, example_scores=np.full(200, 0.01)),
    ]
    ranked = rank(rows)
    assert lead_holds(ranked) is False
    assert lead_holds_paired(ranked) is True
    ahead = leader_ahead(ranked)
    assert ahead[0] is None
    low, high = ahead[1]
    assert 0.018 < low < 0.02 < high < 0.022  # the gap is 0.02 to within the noise
    assert low > 0.0
    text = format_markdown(ranked, {})
    assert "lead's 95% interval lies above 0" in text
    assert f"| +{a.mean() - b.mean():.3f} [+{low:.3f}, +{high:.3f}] |" in text
    data = to_json(ranked, {})
    assert data["lead_holds_paired"] is True
    assert "example_scores" not in data["rows"][0]  # per-example values stay out of the JSON
    assert data["rows"][1]["leader_ahead_ci95"] == pytest.approx([low, high])
    json.dumps(data)


def test_paired_interval_includes_zero_for_a_coin_flip():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 0.3, 300), rng.uniform(0, 0.3, 300)
    first, second = (a, b) if a.mean() >= b.mean() else (b, a)
    ranked = rank(
        [
            scored("x", first.mean(), 0.0, 0.3, example_scores=first),
            scored("y", second.mean(), 0.0, 0.3, example_scores=second),
        ]
    )
    low, high = leader_ahead(ranked)[1]
    assert low < 0.0 < high
    assert lead_holds_paired(ranked) is False
    assert "the two are not told apart" in format_markdown(ranked, {})


def test_resolution_says_when_not_even_the_ceiling_clears_the_runner_up():
    # 30 examples whose points are the metric's buckets. The runner-up "b" sits 0.02 under
    # the leader on average; the ceiling is 0.03 above "b" but with per-example noise as
    # large as that gap, so its paired interval includes 0: the board cannot resolve a lead.
    rng = np.random.default_rng(2)
    b = rng.choice([0.0, 0.0625, 0.125, 0.25], size=30)
    a = np.clip(b + rng.choice([0.0, 0.0625], size=30), 0, 0.5)
    near = b + np.tile([0.125, -0.0625, 0.0], 10)  # +0.021 on average, sd 0.08
    far = b + 0.1 + rng.normal(0.0, 0.005, size=30)
    rows = [scored(n, v.mean(), 0.0, 0.5, example_scores=v) for n, v in (("a", a), ("b", b))]
    ranked = rank(rows)
    unresolved = resolution(ranked, near)
    assert unresolved["against"] == "b"
    assert unresolved["ceiling_ahead"] == pytest.approx(near.mean() - b.mean())
    low, high = unresolved["ceiling_ahead_ci95"]
    assert low < 0.0 < high and unresolved["resolvable"] is False
    text = format_markdown(ranked, {"resolution": unresolved})
    assert "even a perfect unlearner would not be told apart from it" in text
    assert f"leads `b` by {near.mean() - b.mean():+.3f} [{low:+.3f}, {high:+.3f}]" in text
    resolved = resolution(ranked, far)
    low, high = resolved["ceiling_ahead_ci95"]
    assert 0.09 < low < 0.1 < high < 0.11 and resolved["resolvable"] is True
    assert "a lead over it can clear the paired interval here" in format_markdown(
        ranked, {"resolution": resolved}
    )
    # nothing to judge: one scored row, no ceiling, or no per-example scores
    assert resolution(ranked[:1], near) is None
    assert resolution(ranked, None) is None
    assert resolution(rank([scored("a", 0.3, 0, 1), scored("b", 0.2, 0, 1)]), near) is None
    assert "Resolution" not in format_markdown(ranked, {})


def test_repeats_combine_into_means_over_the_per_example_means():
    # one method evaluated three times on the same 4 forget examples
    per_example = [np.array([0.1, 0.2, 0.0, 0.3]), np.array([0.2, 0.2, 0.1, 0.1]), np.zeros(4)]
    rows = [
        scored(
            "m", e.mean(), 0.0, 0.5, example_scores=e, retain_ratio=ra, runs_over_budget=k,
            notes=(f"only {k} of 9 steps fit",),
        )
        for e, ra, k in zip(per_example, (0.9, 1.0, 0.95), (0, 2, 1), strict=True)
    ]  # fmt: skip
    row = combine_repeats(rows)
    assert row.repeat_scores == pytest.approx((0.15, 0.15, 0.0))
    assert row.score == pytest.approx(0.1)
    assert row.example_scores == pytest.approx([0.1, 0.4 / 3, 1 / 30, 0.4 / 3])
    assert row.example_scores.mean() == pytest.approx(row.score)
    low, high = row.score_ci95
    assert 1 / 30 <= low < row.score < high <= 0.4 / 3  # over the 4 per-example means
    assert row.retain_ratio == pytest.approx(0.95) and row.runs_over_budget == 3
    assert row.notes == ("only 0 of 9 steps fit",)  # one note per kind, the first one's text
    assert combine_repeats(rows[:1]) is rows[0]
    # without per-example scores: the envelope of the repeats' intervals
    bare = combine_repeats([scored("m", 0.2, 0.1, 0.3), scored("m", 0.1, 0.05, 0.2)])
    assert bare.score_ci95 == (0.05, 0.3) and bare.example_scores is None
    # a repeat that failed fails the method
    broken = combine_repeats([rows[0], Row("m", error="boom"), rows[2]])
    assert broken.failed and broken.error == "repeat 2 of 3: boom"
    with pytest.raises(ValueError, match="one method's repeats"):
        combine_repeats([rows[0], scored("other", 0.1, 0.0, 0.2)])


def test_repeat_summary_and_the_markdown_of_a_repeated_board():
    a, b = np.array([0.3, 0.3, 0.2, 0.3]), np.array([0.1, 0.1, 0.0, 0.1])
    def board(x, y):
        return [scored(n, v.mean(), 0, 1, example_scores=v) for n, v in (("x", x), ("y", y))]

    first, second = board(a, b), board(b, b + 0.001)  # y leads the 2nd by 0.001 on every example
    summary = repeat_summary([first, second])
    assert summary == {"repeats": 2, "leaders": ["x", "y"], "lead_holds_paired": [True, True]}
    rows = [combine_repeats(list(pair)) for pair in zip(first, second, strict=True)]
    text = format_markdown(rank(rows), {"repeat_summary": summary})
    assert "| score [95% CI] | per repeat | F |" in text
    assert f"| {a.mean():.3f} / {b.mean():.3f} |" in text
    assert "First in a repeat's own ranking: `x` 1, `y` 1 (of 2)" in text
    assert "held in 2 of 2" in text
    json.dumps(to_json(rank(rows), {"repeat_summary": summary}))
    # one evaluation: no repeats column
    assert "per repeat" not in format_markdown(rank(first), {})


def test_repeat_order_rotates_so_each_method_starts_in_a_different_part_of_the_board():
    assert repeat_order(4, 0, 1) == [0, 1, 2, 3]  # one repeat: the list as given
    orders = [repeat_order(9, i, 3) for i in range(3)]
    assert [o[0] for o in orders] == [0, 3, 6]
    assert all(sorted(o) == list(range(9)) for o in orders)
    # over the repeats, no method's mean position is more than a third of the board off centre
    positions = np.array([[o.index(m) for o in orders] for m in range(9)])
    assert np.all(np.abs(positions.mean(axis=1) - 4) <= 3)
    assert repeat_order(2, 1, 2) == [1, 0]


def test_each_repeat_resolves_its_own_budget_and_runs_its_own_rotation(monkeypatch):
    timed = iter([5.0, 6.0, 7.0])  # one retraining timed before each of three repeats
    calls = []

    def fake_resolve(config, *, cache, progress=True):
        seconds = next(timed)
        return dataclasses.replace(config, budget_s=0.2 * seconds, retraining_s=seconds)

    def fake_board(config, names, **kw):
        calls.append((config.budget_s, list(names)))
        # a score that says which method and which budget produced it
        score = {"a": 0.1, "b": 0.2, "c": 0.3}
        return [scored(n, score[n] + config.budget_s, 0, 2) for n in names], None

    monkeypatch.setattr(leaderboard, "resolve_budget", fake_resolve)
    monkeypatch.setattr(leaderboard, "_one_board", fake_board)
    given = EvalConfig(budget_s="retime")
    rows, shared = evaluate_methods(given, ["a", "b", "c"], cache=None, repeats=3)
    assert [c[1] for c in calls] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert [c[0] for c in calls] == pytest.approx([1.0, 1.2, 1.4])
    assert [r.method for r in rows] == ["a", "b", "c"]  # back in the given order
    assert rows[0].repeat_scores == pytest.approx((1.1, 1.3, 1.5))
    assert rows[2].repeat_scores == pytest.approx((1.3, 1.5, 1.7))
    assert shared["budget_s"] == pytest.approx(1.2)
    summary = shared["repeat_summary"]
    assert summary["retraining_s"] == [5.0, 6.0, 7.0]
    assert summary["budget_s"] == pytest.approx([1.0, 1.2, 1.4])
    assert summary["orders"][1] == ["b", "c", "a"]
    text = format_markdown(rank(rows), {**shared, "n_models": 3})
    assert "budget 1.2 s per run (the repeats' mean)" in text
    assert "each repeat's start: 5.00 / 6.00 / 7.00 s" in text
    assert "budgets per run were 1 / 1.2 / 1.4 s" in text


def test_a_fixed_budget_is_the_same_for_every_repeat(monkeypatch):
    monkeypatch.setattr(leaderboard, "_one_board", lambda config, names, **kw: (
        [scored(n, 0.1, 0, 1) for n in names], None))  # fmt: skip
    given = EvalConfig(budget_s=0.5)  # resolve_budget gives a number back as it is
    rows, shared = evaluate_methods(given, ["a", "b"], cache=None, repeats=2)
    assert shared["budget_s"] == 0.5
    assert shared["repeat_summary"]["retraining_s"] == [None, None]
    text = format_markdown(rank(rows), {**shared, "n_models": 3})
    assert "the repeats' mean" not in text and "timed again" not in text


def test_a_row_reads_back_from_its_record_to_the_last_bit():
    points = np.array([1 / 3, 0.1 + 0.2, 2.5e-17, 0.0])
    row = scored("relearn", 0.1 + 0.2, 1 / 7, 0.9, default=True, notes=("only 58 of 65 steps",),
                 example_scores=points, repeat_scores=(0.1, 0.5))  # fmt: skip
    back = leaderboard.row_from_record(json.loads(json.dumps(leaderboard.row_record(row))))
    assert back == row  # every field but the per-example scores (not compared by Row's ==)
    assert back.example_scores.tobytes() == points.tobytes()
    assert isinstance(back.score_ci95, tuple) and isinstance(back.notes, tuple)
    failed = Row("zz", error="deliberately broken", notes=("a warning",))
    assert leaderboard.row_from_record(leaderboard.row_record(failed)) == failed


def test_a_resumed_board_keeps_the_budgets_its_repeats_were_resolved_to(tmp_path, monkeypatch):
    from local_eval.common.journal import Journal

    timed = iter([5.0, 6.0, 7.0, 8.0])
    monkeypatch.setattr(leaderboard, "resolve_budget", lambda config, **kw: dataclasses.replace(
        config, budget_s=0.2 * (t := next(timed)), retraining_s=t))  # fmt: skip
    monkeypatch.setattr(leaderboard, "_one_board", lambda config, names, **kw: (
        [scored(n, config.budget_s, 0, 2) for n in names], None))  # fmt: skip
    journal = Journal(tmp_path, {"board": 1})
    given = EvalConfig(budget_s="retime")
    _, first = evaluate_methods(given, ["a", "b"], cache=None, repeats=2, journal=journal)
    assert first["repeat_summary"]["retraining_s"] == [5.0, 6.0]
    # started again: no retraining timed again, each repeat under the budget it had
    _, again = evaluate_methods(given, ["a", "b"], cache=None, repeats=2, journal=journal)
    assert again["repeat_summary"] == first["repeat_summary"]
    assert next(timed) == 7.0


def test_markdown_lists_method_notes():
    ranked = [scored("a", 0.3, 0.2, 0.4, notes=("fisher on 8 samples",))]
    assert "- `a`: fisher on 8 samples" in format_markdown(ranked, {})


def test_row_from_report_carries_the_interval_through_the_utility_ratios():
    acc = {
        g: {"retain": {"mean": ra}, "test": {"mean": ta}}
        for g, ra, ta in (("unlearned", 0.9, 0.8), ("retrained", 1.0, 1.0))
    }
    report = {
        "score": 0.2 * 0.72,
        "forget_quality": 0.2,
        "forget_quality_ci95": [0.1, 0.3],
        "fraction_of_ceiling": 0.5,
        "utility": {"retain_ratio": 0.9, "test_ratio": 0.8},
        "accuracy": acc,
        "time": {"unlearning_s_mean": 0.4, "ratio_to_retraining": 0.12},
        "method": {"runs_over_budget": 1},
    }
    row = row_from_report("m", report, default=True, points=np.array([0.0, 0.2, 0.4]))
    assert row.score_ci95 == pytest.approx((0.1 * 0.72, 0.3 * 0.72))
    # each example's share of the score: its points times the utility ratios; mean = score
    assert row.example_scores == pytest.approx([0.0, 0.2 * 0.72, 0.4 * 0.72])
    assert row.example_scores.mean() == pytest.approx(row.score)
    assert (row.runs_over_budget, row.default, row.failed) == (1, True, False)
    nan = row_from_report("m", {**report, "score": math.nan})
    assert nan.failed and "NaN" in nan.error
    assert row.kept_memorisation is None  # a report without a diagnosis
    diagnosis = {"mean_error": 0.8, "spread_ratio": 1.1, "kept_memorisation": 0.6,
                 "kept_own": None, "shift": -0.2}  # fmt: skip
    row = row_from_report("m", {**report, "diagnosis": {"unlearned": diagnosis}})
    assert (row.mean_error, row.spread_ratio, row.kept_memorisation, row.kept_own) == (
        0.8, 1.1, 0.6, None)  # fmt: skip


def test_repeats_average_the_diagnosis_and_the_json_carries_it():
    rows = [
        scored("m", 0.1, 0.0, 0.2, mean_error=0.8, spread_ratio=1.0, kept_memorisation=0.5,
               kept_own=0.7),
        scored("m", 0.2, 0.1, 0.3, mean_error=0.6, spread_ratio=1.2, kept_memorisation=0.7,
               kept_own=0.5),
    ]  # fmt: skip
    row = combine_repeats(rows)
    assert (row.mean_error, row.spread_ratio, row.kept_memorisation, row.kept_own) == (
        pytest.approx(0.7), pytest.approx(1.1), pytest.approx(0.6), pytest.approx(0.6))
    unsplit = combine_repeats([rows[0], dataclasses.replace(rows[1], kept_own=None)])
    assert unsplit.kept_own is None and unsplit.kept_memorisation == pytest.approx(0.6)
    (entry,) = to_json([row], {})["rows"]
    assert entry["kept_own"] == pytest.approx(0.6) and entry["mean_error"] == pytest.approx(0.7)
    back = leaderboard.row_from_record(json.loads(json.dumps(leaderboard.row_record(row))))
    assert back == row
    old = {k: v for k, v in leaderboard.row_record(row).items() if k != "kept_own"}
    assert leaderboard.row_from_record(old).kept_own is None  # a journal from before


def _raises(net, retain, forget, val, *, budget_s=None):
    raise RuntimeError("deliberately broken")


def _nan_weights(net, retain, forget, val, *, budget_s=None):
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float("nan"))
    return net.eval()


def _hangs(net, retain, forget, val, *, budget_s=None):
    time.sleep(600)


@pytest.mark.slow
def test_board_lists_every_registered_method_and_failures(tmp_path, monkeypatch, capsys):
    registered = list(submission.METHODS)
    monkeypatch.setitem(submission.METHODS, "zz_raises", _raises)
    monkeypatch.setitem(submission.METHODS, "zz_nan", _nan_weights)
    monkeypatch.setitem(submission.METHODS, "zz_hangs", _hangs)
    out = tmp_path / "board"
    code = main(
        [
            "leaderboard",
            "--n-models",
            "3",
            "--budget-s",
            "0.3",
            "--epochs",
            "2",  # cheaper references: this checks the board, not the methods
            "--run-timeout-s",
            "5",
            "--workers",
            "2",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert {p.name for p in out.iterdir()} == {
        "leaderboard.md",
        "leaderboard.json",
        "leaderboard.png",
        ".progress",  # each evaluation as it finished, for a resume
    }
    kept = {p.stem for p in (out / ".progress").iterdir()}
    assert kept == {"identity", "budget-0", "shared", *(f"row-0-{m}" for m in registered),
                    "row-0-zz_raises", "row-0-zz_nan", "row-0-zz_hangs"}  # fmt: skip
    board = json.loads((out / "leaderboard.json").read_text())
    rows = {r["method"]: r for r in board["rows"]}
    assert set(rows) == {*registered, "zz_raises", "zz_nan", "zz_hangs"}
    assert "deliberately broken" in rows["zz_raises"]["error"]
    assert "NaN" in rows["zz_nan"]["error"]
    assert "still going after 5 s" in rows["zz_hangs"]["error"]
    assert all(rows[m]["rank"] is None for m in ("zz_raises", "zz_nan", "zz_hangs"))
    assert rows[submission.DEFAULT_METHOD]["default"] is True
    scored_rows = [r for r in board["rows"] if r["rank"] is not None]
    assert [r["score"] for r in scored_rows] == sorted(
        (r["score"] for r in scored_rows), reverse=True
    )
    markdown = (out / "leaderboard.md").read_text()
    for name in registered:
        assert f"`{name}`" in markdown
    assert f"`{submission.DEFAULT_METHOD}` (default)" in markdown
    assert markdown.count("**failed**") == 3
    assert board["n_models"] == 3 and board["budget_s"] == 0.3
    assert board["references"]["retraining_s"] > 0
    resolved = board["resolution"]  # the ceiling against the runner-up, on the same examples
    assert resolved["against"] == scored_rows[1]["method"]
    assert resolved["ceiling_ahead"] == pytest.approx(
        board["references"]["ceiling_score"] - scored_rows[1]["score"]
    )
    low, high = resolved["ceiling_ahead_ci95"]
    assert low <= resolved["ceiling_ahead"] <= high
    assert resolved["resolvable"] is (low > 0)
    assert "Resolution: the ceiling (a 2nd retrained set) leads" in markdown


@pytest.mark.slow
def test_a_repeated_board_ranks_by_the_mean_of_its_repeats(tmp_path, capsys):
    out = tmp_path / "board"
    argv = ["leaderboard", "--methods", "finetune,relearn", "--repeats", "2", "--n-models", "3",
            "--budget-s", "retime", "--epochs", "2", "--workers", "1", "--quiet",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().out
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["repeats"] == 2
    summary = board["repeat_summary"]
    assert summary["repeats"] == 2 and len(summary["leaders"]) == 2
    # one retraining timed before each repeat, each repeat's budget 20% of its own timing
    timed = summary["retraining_s"]
    assert len(timed) == 2 and all(t > 0 for t in timed)
    assert summary["budget_s"] == pytest.approx([0.2 * t for t in timed])
    assert board["budget_s"] == pytest.approx(np.mean(summary["budget_s"]))
    assert board["references"]["retraining_s"] == pytest.approx(np.mean(timed))
    assert summary["orders"] == [["finetune", "relearn"], ["relearn", "finetune"]]
    assert "timed again at each repeat's start" in board["title"]
    assert set(summary["leaders"]) <= {"finetune", "relearn"}
    for row in board["rows"]:
        assert len(row["repeat_scores"]) == 2
        assert row["score"] == pytest.approx(np.mean(row["repeat_scores"]))
    assert board["rows"][0]["score"] >= board["rows"][1]["score"]
    markdown = (out / "leaderboard.md").read_text()
    assert "per repeat" in markdown and "Repeats: 2 evaluations" in markdown


@pytest.mark.slow
def test_an_interrupted_board_resumes_to_the_board_it_would_have_been(tmp_path, monkeypatch,
                                                                      capsys):  # fmt: skip
    # no budget: each method's full recipe, so two evaluations agree but for their seconds
    argv = ["leaderboard", "--methods", "finetune,bad_teacher", "--repeats", "2", "--n-models",
            "3", "--budget-s", "none", "--epochs", "2", "--workers", "1", "--quiet",
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    evaluate, calls = leaderboard.run_evaluation, []

    def interrupted_at_the_third(config, method, **kw):
        calls.append(config)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return evaluate(config, method, **kw)

    monkeypatch.setattr(leaderboard, "run_evaluation", interrupted_at_the_third)
    out = tmp_path / "resumed"
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted: 2 of 4 evaluations are kept in {out}" in err
    assert f"--out {out} to resume" in err
    assert not (out / "leaderboard.json").exists()
    calls.clear()

    def counted(config, method, **kw):
        calls.append(config)
        return evaluate(config, method, **kw)

    monkeypatch.setattr(leaderboard, "run_evaluation", counted)
    assert main([*argv, "--out", str(out)]) == 0
    assert len(calls) == 2  # only the two evaluations the interruption had not finished
    whole, resumed = (json.loads((tmp_path / n / "leaderboard.json").read_text())
                      for n in ("whole", "resumed"))  # fmt: skip
    timing = {"seconds_per_run", "ratio_to_retraining"}
    for a, b in zip(whole["rows"], resumed["rows"], strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }
    for key in ("resolution", "setup", "repeat_summary", "budget_s"):
        assert resumed[key] == whole[key]
    assert whole["resumed"] is None
    assert resumed["resumed"] == {"read_back": 2, "evaluations": 4}
    assert "- resumed: 2 of its 4 evaluations read back" in (out / "leaderboard.md").read_text()
    # once finished, the same command again evaluates nothing and writes the same board
    calls.clear()
    assert main([*argv, "--out", str(out)]) == 0
    assert calls == []
    assert json.loads((out / "leaderboard.json").read_text())["rows"] == resumed["rows"]


def test_a_board_folder_of_other_settings_is_refused_before_any_work(tmp_path, monkeypatch,
                                                                     capsys):  # fmt: skip
    from local_eval.cli.leaderboard import JOURNAL
    from local_eval.common.journal import Journal

    out = tmp_path / "board"
    names = ["finetune", "relearn"]
    started = EvalConfig(n_models=32, budget_s="retime")
    Journal(out / JOURNAL, leaderboard.board_identity(
        started, names, repeats=1, run_timeout_s="per budget"))  # fmt: skip
    monkeypatch.setattr(leaderboard, "run_evaluation", lambda *a, **kw: pytest.fail("ran"))
    argv = ["leaderboard", "--methods", ",".join(names), "--budget-s", "retime", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]  # fmt: skip
    assert main([*argv, "--n-models", "64"]) == 2
    err = capsys.readouterr().err
    assert "holds a leaderboard started with other settings (n_models: 32 there, 64 now)" in err
    assert not (tmp_path / "cache").exists()


def test_the_board_refuses_fewer_than_one_repeat(tmp_path, capsys):
    assert main(["leaderboard", "--repeats", "0", "--out", str(tmp_path / "none")]) == 2
    assert "--repeats must be 1 or more, got 0" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_a_board_entry_is_a_method_or_a_variant_of_one_with_its_hyperparameters():
    variant = "forget_free[cycle_epochs=(1, 2)]"  # a comma inside a value
    assert leaderboard.choose_methods(
        f" relearn, relearn[ regime=reset , epochs=4 ],prune_reinit,relearn,{variant}"
    ) == ["relearn", "relearn[regime=reset,epochs=4]", "prune_reinit", variant]
    assert leaderboard.method_entry("relearn") == ("relearn", {})
    assert leaderboard.choose_methods("all") == list(submission.METHODS)
    assert leaderboard.choose_methods("relearn[regime=reset], all,relearn") == [
        "relearn[regime=reset]", *submission.METHODS]  # fmt: skip
    assert leaderboard.method_entry("relearn[regime=reset,epochs=4]") == (
        "relearn", {"regime": "reset", "epochs": 4})  # fmt: skip
    assert leaderboard.method_entry("forget_free[cycle_epochs=(1, 2)]") == (
        "forget_free", {"cycle_epochs": (1, 2)})  # fmt: skip
    for spec, said in [
        ("relearn[regime=reset", "unbalanced brackets"),
        ("relearn[]", "empty brackets"),
        ("relearn[regime]", "in the --methods entry 'relearn[regime]': --hp expects NAME=VALUE"),
        ("relearn[bogus=1]", "relearn has no hyperparameter bogus"),
        ("ssd[dampening=(1, 2)]", "ssd's dampening takes float, default 1.0"),
        ("relearn(x=1)", "a --methods entry is NAME or NAME[K=V,...]"),
        ("nope[x=1]", "unknown method 'nope'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(said)):
            leaderboard.choose_methods(spec)


def test_a_variant_the_method_cannot_take_is_refused_before_any_work(tmp_path, capsys):
    argv = ["leaderboard", "--methods", "relearn,relearn[regim=reset]", "--quiet",
            "--out", str(tmp_path / "board"), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: relearn has no hyperparameter regim; its hyperparameters: regime," in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "board").exists()


def test_a_variant_runs_with_its_hyperparameters_as_its_own_row(tmp_path, monkeypatch):
    from local_eval.common.journal import Journal
    from local_eval.runs.pipeline import SubmissionError

    given = []

    def fails(config, method, **kw):  # each evaluation fails, after saying what it ran
        given.append((method.source, dict(method.overrides)))
        raise SubmissionError("stop here")

    monkeypatch.setattr(leaderboard, "run_evaluation", fails)
    names = leaderboard.choose_methods("relearn,relearn[regime=reset,epochs=4]")
    config = EvalConfig(n_models=2, budget_s=1.0)
    journal = Journal(tmp_path / "j", {"board": 1})
    rows, _ = evaluate_methods(
        config, names, cache=None, default="relearn", progress=False, journal=journal
    )
    assert given == [("method:relearn", {}), ("method:relearn", {"regime": "reset", "epochs": 4})]
    assert [(r.method, r.default) for r in rows] == [
        ("relearn", True), ("relearn[regime=reset,epochs=4]", False)]  # fmt: skip
    keys = set(journal.keys())
    assert "row-0-relearn" in keys  # a plain name keeps the key boards journaled before had
    (variant,) = keys - {"row-0-relearn", "budget-0"}
    assert re.fullmatch(r"row-0-relearn-[0-9a-f]{12}", variant)
    # a variant is not the competition entry it varies: the agreement counts entries only
    entries = ["forget_contrast", "masked_small_gradients", "noisy_weights"]
    board = [scored("prune_reinit[sparsity=0.5]", 0.6, 0.5, 0.7)]
    board += [scored(m, 0.5 - 0.1 * i, 0.4 - 0.1 * i, 0.6 - 0.1 * i) for i, m in enumerate(entries)]
    agreement = competition_agreement(rank(board))
    assert agreement["entries"] == entries and "prune_reinit" in agreement["missing"]
    assert agreement["spearman_rho"] == pytest.approx(1.0)


def test_agreement_with_the_private_leaderboard_on_fixed_rows():
    # This board's order of six entries; two of the eight are missing (one failed, one absent).
    board = ["noisy_weights", "forget_contrast", "conv_transpose", "masked_small_gradients",
             "forget_free", "reset_distill"]  # fmt: skip
    rows = [scored(m, 0.5 - 0.05 * i, 0.4 - 0.05 * i, 0.6 - 0.05 * i) for i, m in enumerate(board)]
    rows += [scored("shrink_perturb", 0.9, 0.8, 1.0), Row("prune_reinit", error="boom")]
    ranked = rank(rows)
    agreement = competition_agreement(ranked)
    private = [4, 2, 6, 3, 9, 7]  # the entries' Kaggle ranks, in the board's order
    assert agreement["entries"] == board and agreement["private_ranks"] == private
    assert agreement["missing"] == ["prune_reinit", "noise_injection"]
    # against scipy, and against the hand count: 15 pairs, 11 concordant, 4 discordant
    assert agreement["spearman_rho"] == pytest.approx(spearmanr(range(6), private).statistic)
    assert agreement["kendall_tau"] == pytest.approx(kendalltau(range(6), private).statistic)
    assert agreement["kendall_tau"] == pytest.approx((11 - 4) / 15)
    within = [3, 1, 4, 2, 6, 5]  # each entry's private rank among these six
    d2 = sum((i + 1 - r) ** 2 for i, r in enumerate(within))  # 12
    assert agreement["spearman_rho"] == pytest.approx(1 - 6 * d2 / (6 * 35))
    markdown = format_markdown(ranked, {"title": "t"})
    assert "orders 6 of the 8 re-implemented entries (`prune_reinit`, `noise_injection` not " \
        "scored) with Spearman's rho 0.66 and Kendall's tau 0.47" in markdown  # fmt: skip
    assert to_json(ranked, {})["competition_agreement"] == agreement


def test_the_default_is_judged_against_every_entry_paired_whoever_leads():
    def row(name, values, **kw):
        values = np.asarray(values, dtype=np.float64)
        mean = float(values.mean())
        return scored(name, mean, mean - 0.1, mean + 0.1, example_scores=values, **kw)

    n = 20
    default = row("mine", [0.3] * n, default=True)
    steady = row("forget_free", [0.25] * n)  # the best entry: always 0.05 below the default
    wide = row("noisy_weights", [-0.8, 1.2] * (n // 2))  # lower on average, all over the place
    ranked = rank([row("shrink_perturb", [0.31] * n), default, steady, wide])
    against = default_vs_entries(ranked)
    assert against["default"] == "mine"
    assert [lead["entry"] for lead in against["leads"]] == ["forget_free", "noisy_weights"]
    best, other = against["leads"]
    assert best["lead"] == pytest.approx(0.05) and best["ci95"] == pytest.approx((0.05, 0.05))
    assert other["lead"] == pytest.approx(0.1)
    assert other["ci95"] == paired_bootstrap(default.example_scores, wide.example_scores)
    assert other["ci95"][0] < 0 < other["ci95"][1]  # wide: its paired interval straddles 0
    assert against["holds_over_every_entry"] is False
    text = format_markdown(ranked, {"title": "t"})
    assert (
        "The kit's default method `mine` ranks 2. Against the best-scoring competition entry, "
        "`forget_free`: +0.050 [+0.050, +0.050] (the default's score minus the entry's, paired "
        "95% interval); its paired lead does not clear 0 over every one of the 2 entries scored."
    ) in text
    assert to_json(ranked, {})["default_vs_entries"] == against
    # without the wide entry it clears over all; without entries there is nothing to judge
    clear = rank([default, steady])
    assert default_vs_entries(clear)["holds_over_every_entry"] is True
    assert "its paired lead clears 0 over the one entry scored" in format_markdown(clear, {})
    assert default_vs_entries(rank([default, row("shrink_perturb", [0.31] * n)])) is None


def test_no_agreement_is_claimed_from_fewer_than_three_entries():
    ranked = rank(
        [scored("forget_contrast", 0.3, 0.2, 0.4), scored("noisy_weights", 0.2, 0.1, 0.3)]
    )
    assert competition_agreement(ranked) is None
    assert "Against the competition" not in format_markdown(ranked, {"title": "t"})


def test_messages_that_differ_only_in_their_numbers_are_one_note():
    said = [
        "m: only 64 of 65 steps fit in budget_s=1.28",
        "m: only 60 of 65 steps fit in budget_s=1.28",
        "m: projected 19 of 21 layers",
        "m: only 64 of 65 steps fit in budget_s=1.28",
        "m: projected 19 of 21 layers",
    ]
    assert distinct_notes(said) == (
        "m: only 64 of 65 steps fit in budget_s=1.28 (3 such messages, 2 distinct: their "
        "numbers vary from run to run)",
        "m: projected 19 of 21 layers",
    )
    assert distinct_notes([]) == ()


def test_markdown_shows_the_rows_diagnosis_when_they_have_one():
    ranked = rank([
        scored("a", 0.3, 0.2, 0.4, mean_error=0.84, spread_ratio=1.12, kept_memorisation=0.62,
               kept_own=0.654),
        scored("b", 0.1, 0.0, 0.2, mean_error=1.4, spread_ratio=0.05, kept_memorisation=1.0,
               kept_own=None),
        Row("c", error="boom"),
    ])  # fmt: skip
    text = format_markdown(ranked, {})
    assert "| method | mean off | spread | memorisation kept | own kept |" in text
    assert "| `a` | 0.84 | 1.12x | 62% | 65% |" in text
    assert "| `b` | 1.40 | 0.05x | 100% | - |" in text
    assert "| `c` |" not in text.split("mean off | spread")[1]  # failed rows have none
    old = rank([scored("a", 0.3, 0.2, 0.4)])  # rows of a board from before the diagnosis
    assert "mean off" not in format_markdown(old, {})
