import csv
import json

import numpy as np
import pytest

from local_eval.reporting.diagnosis import diagnose
from local_eval.reporting.report import (
    build_report,
    ceiling_example_scores,
    confidences,
    format_summary,
    write_report,
)
from local_eval.scoring import metric
from local_eval.training.signals import GROUPS, EvalSignals, GroupSignals

N, E, C, T = 8, 24, 3, 40


def group(rng, shift: float) -> GroupSignals:
    logits = rng.normal(size=(N, E, C)).astype(np.float32)
    logits[:, :, 0] += shift
    return GroupSignals(
        forget_logits=logits,
        test_losses=rng.exponential(size=(N, T)).astype(np.float32),
        retain_accuracy=rng.uniform(0.95, 1.0, N),
        test_accuracy=rng.uniform(0.9, 0.95, N),
        forget_accuracy=rng.uniform(0.9, 1.0, N),
        seconds=rng.uniform(0.1, 0.2, N),
        seeds=np.arange(N),
    )


@pytest.fixture(scope="module")
def signals() -> EvalSignals:
    rng = np.random.default_rng(0)
    shifts = {"unlearned": 1.0, "retrained": 0.0, "ceiling": 0.0, "floor": 3.0}
    return EvalSignals(
        targets=np.zeros(E, dtype=np.int64),
        example_ids=np.array([f"img-{i}" for i in range(E)]),
        **{g: group(rng, shifts[g]) for g in GROUPS},
    )


@pytest.fixture(scope="module")
def built(signals):
    return build_report(signals, context={"title": "test run"})


def test_figures_follow_the_metric(signals, built):
    report, details = built
    conf = confidences(signals)
    assert report["forget_quality"] == metric.forget_quality(conf["unlearned"], conf["retrained"])
    assert report["ceiling"]["forget_quality"] == metric.forget_quality(
        conf["ceiling"], conf["retrained"]
    )
    expected = metric.final_score(
        report["forget_quality"],
        retain_acc_unlearned=signals.unlearned.retain_accuracy.mean(),
        retain_acc_retrained=signals.retrained.retain_accuracy.mean(),
        test_acc_unlearned=signals.unlearned.test_accuracy.mean(),
        test_acc_retrained=signals.retrained.test_accuracy.mean(),
    )
    assert report["score"] == pytest.approx(expected)
    lo, hi = report["forget_quality_ci95"]
    assert lo <= report["forget_quality"] <= hi
    assert report["fraction_of_ceiling"] == pytest.approx(
        report["forget_quality"] / report["ceiling"]["forget_quality"]
    )
    # the floor group sits far from the references: it must score below the ceiling
    assert report["floor"]["forget_quality"] < report["ceiling"]["forget_quality"]
    assert report["time"]["ratio_to_retraining"] == pytest.approx(
        signals.unlearned.seconds.mean() / signals.floor.seconds[0]
    )
    assert report["accuracy"]["floor"]["retain"]["mean"] == pytest.approx(
        signals.floor.retain_accuracy.mean()
    )
    assert set(report["sanity_check"]) == {"what", "unlearned", "retrained", "floor"}
    assert "NOT the competition metric" in report["sanity_check"]["what"]
    assert details.epsilon.shape == (E,)


def test_ceiling_example_scores_are_the_ceilings_points_times_its_utility(signals, built):
    report, _ = built
    conf = confidences(signals)
    points = metric.example_details(conf["ceiling"], conf["retrained"]).points
    ceiling, ref = signals.ceiling, signals.retrained
    utility = (ceiling.retain_accuracy.mean() / ref.retain_accuracy.mean()) * (
        ceiling.test_accuracy.mean() / ref.test_accuracy.mean()
    )
    scores = ceiling_example_scores(signals)
    assert scores.shape == (E,)
    assert scores == pytest.approx(points * utility)
    assert scores.mean() == pytest.approx(report["ceiling"]["score"])


def test_written_files(tmp_path, signals, built):
    report, details = built
    written = write_report(report, details, signals, tmp_path)
    names = {p.name for p in written}
    assert names == {
        "report.json",
        "per_example.csv",
        "signals.npz",
        "unlearned.npz",
        "retrained.npz",
        "summary.txt",
        "epsilons.png",
        "hardest.png",
        "accuracies.png",
    }
    assert json.loads((tmp_path / "report.json").read_text())["score"] == report["score"]
    rows = list(csv.DictReader((tmp_path / "per_example.csv").open()))
    assert len(rows) == E and rows[3]["example_id"] == "img-3"
    assert float(rows[3]["epsilon"]) == pytest.approx(details.epsilon[3])
    again = EvalSignals.load(tmp_path / "signals.npz")
    assert np.array_equal(again.floor.forget_logits, signals.floor.forget_logits)
    assert list(again.example_ids) == list(signals.example_ids)
    with np.load(tmp_path / "unlearned.npz") as data:
        assert data["confidences"].shape == (N, E)


def test_saved_groups_rescore_with_the_score_cli(tmp_path, signals, built, capsys):
    from local_eval.cli.score import main as score_main

    report, details = built
    write_report(report, details, signals, tmp_path, plots=False)
    code = score_main(
        [
            "--unlearned",
            str(tmp_path / "unlearned.npz"),
            "--retrained",
            str(tmp_path / "retrained.npz"),
            "--json",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["forget_quality"] == pytest.approx(
        report["forget_quality"]
    )


def test_summary_mentions_every_figure(built):
    report, _ = built
    text = format_summary(report)
    for needle in (
        "test run",
        "ceiling",
        "floor",
        "utility ratios",
        "per unlearning run",
        "NOT the competition metric",
        f"{report['score']:.4f}",
        "per forget example",
        "of the originals' memorisation",
    ):
        assert needle in text


def test_the_diagnosis_splits_off_the_original_only_when_it_is_the_floors_model_0(signals, built):
    conf = confidences(signals)
    plain = built[0]["diagnosis"]
    assert plain["original_split"] is False
    for g in ("unlearned", "ceiling"):  # every originals' model compared, none as the original
        assert plain[g] == diagnose(conf[g], conf["retrained"], conf["floor"])
    split = build_report(signals, original_in_floor=True)[0]["diagnosis"]
    assert split["original_split"] is True
    expected = diagnose(
        conf["unlearned"], conf["retrained"], conf["floor"][1:], original=conf["floor"][0]
    )
    assert split["unlearned"] == expected and expected["kept_own"] is not None
    text = format_summary(build_report(signals, original_in_floor=True)[0])
    assert f"{_pct_of(expected['kept_own'])} of their original's own deviation" in text
    assert "own deviation" not in format_summary(built[0])


def _pct_of(x: float) -> str:
    return f"{100 * x:.0f}%"


def test_signals_file_must_be_complete(tmp_path):
    np.savez(tmp_path / "x.npz", targets=np.zeros(3))
    with pytest.raises(ValueError, match="not an evaluator signals file"):
        EvalSignals.load(tmp_path / "x.npz")


def test_paired_bootstrap_interval_of_a_constant_gap_is_that_gap():
    from local_eval.reporting.report import paired_bootstrap

    rng = np.random.default_rng(3)
    a = rng.uniform(0.0, 1.0, 50)
    assert paired_bootstrap(a, a - 0.25) == pytest.approx((0.25, 0.25))
    # an unpaired difference of two independent arrays: the interval holds its mean gap
    b = rng.uniform(0.0, 1.0, 50)
    low, high = paired_bootstrap(a, b)
    assert low < a.mean() - b.mean() < high
    assert high - low > 0.1  # wide: nothing shared between a and b


def test_paired_bootstrap_refuses_unpaired_arrays():
    from local_eval.reporting.report import paired_bootstrap

    with pytest.raises(ValueError, match="equal-length 1-D arrays"):
        paired_bootstrap(np.zeros(5), np.zeros(4))


def test_one_retraining_is_the_originals_training_not_the_references_mean(signals, built):
    # the yardstick of the ratio and of the 20% cut-off is the original's own training (the
    # floor's model 0, what the auto budget takes 20% of), not the references' mean seconds
    t = built[0]["time"]
    run_s, original_s = signals.unlearned.seconds, float(signals.floor.seconds[0])
    assert original_s != pytest.approx(signals.retrained.seconds.mean())  # the two differ here
    assert t["retraining_s"] == pytest.approx(original_s)
    assert t["references_s_mean"] == pytest.approx(signals.retrained.seconds.mean())
    assert t["ratio_to_retraining"] == pytest.approx(run_s.mean() / original_s)
    assert t["slow_runs"] == int(np.sum(run_s > 0.2 * original_s))
    assert t["slow_run_threshold_s"] == pytest.approx(0.2 * original_s)
    # with an original given, the floor's model 0 is the recipe's original, not the runs'
    assert f"the recipe's original, trained here, {original_s:.2f} s" in format_summary(built[0])
    assert t["retraining_s_of"] == "recipe"
    own, _ = build_report(signals, context={"title": "test run"}, original_in_floor=True)
    assert f"the original's training, {original_s:.2f} s" in format_summary(own)
    assert own["time"]["retraining_s_of"] == "original"
    # batched references (amortised seconds) change nothing: the original is trained alone
    report, _ = build_report(signals, context={"config": {"trainer": "batched"}})
    assert report["time"] == t
