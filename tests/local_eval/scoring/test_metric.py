"""The scorer against the organisers' golden cases, a literal transcription, and properties."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from local_eval.scoring import metric
from local_eval.scoring.metric_naive import per_example_epsilons_naive

GOLDEN = Path(__file__).resolve().parents[3].parent / "shared" / "golden" / "metric_cases.npz"


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.is_file():
        pytest.fail(f"golden cases not found at {GOLDEN}; the repository needs ../shared beside it")
    with np.load(GOLDEN) as data:
        return {key: data[key] for key in data.files}


def _case_names(golden) -> list[str]:
    return sorted({k.split("__")[0] for k in golden if k.endswith("__eps")})


# ----------------------------------------------------------------------------- golden cases
def test_golden_has_the_six_cases(golden):
    assert _case_names(golden) == [
        "heavy_n100",
        "logits_n64",
        "peaky_n128",
        "same_n16",
        "shift_n64",
        "ties_n32",
    ]


@pytest.mark.parametrize(
    "case", ["heavy_n100", "logits_n64", "peaky_n128", "same_n16", "shift_n64", "ties_n32"]
)
def test_golden_epsilons_and_forget_quality(golden, case):
    u, r = golden[f"{case}__unlearned"], golden[f"{case}__retrained"]
    eps = metric.per_example_epsilons(u, r)
    np.testing.assert_allclose(eps, golden[f"{case}__eps"], rtol=0, atol=1e-6)
    assert abs(metric.forget_quality(u, r) - float(golden[f"{case}__score"])) <= 1e-12


def test_golden_logit_scaled_confidence(golden):
    conf = metric.logit_scaled_confidence(golden["lsc__logits"], golden["lsc__targets"])
    np.testing.assert_allclose(conf, golden["lsc__conf"], rtol=0, atol=1e-9)


def test_golden_details_agree_with_epsilons(golden):
    u, r = golden["ties_n32__unlearned"], golden["ties_n32__retrained"]
    details = metric.example_details(u, r)
    np.testing.assert_array_equal(details.epsilon, metric.per_example_epsilons(u, r))
    assert details.points.sum() / u.shape[1] == pytest.approx(0.325, abs=1e-12)
    np.testing.assert_array_equal(details.median_unlearned, np.median(u, axis=0))
    assert set(details.family) <= {"single", "double"}
    # The reported best rule really has the reported rates on this example's columns.
    for i in range(u.shape[1]):
        retrain_is_pos = details.median_retrained[i] > details.median_unlearned[i]
        pos, neg = (r[:, i], u[:, i]) if retrain_is_pos else (u[:, i], r[:, i])
        if details.family[i] == "single":
            inside_pos = pos >= details.threshold_right[i]
            inside_neg = neg >= details.threshold_right[i]
        else:
            if np.ptp(pos) >= np.ptp(neg):  # interval rules call the narrower group "pos"
                pos, neg = neg, pos
            lo, hi = details.threshold_left[i], details.threshold_right[i]
            inside_pos = (lo <= pos) & (pos <= hi)
            inside_neg = (lo <= neg) & (neg <= hi)
        assert details.fpr[i] == pytest.approx(inside_neg.mean(), abs=1e-7)
        assert details.fnr[i] == pytest.approx(1 - inside_pos.mean(), abs=1e-7)


def test_golden_peaky_case_is_mostly_capped(golden):
    details = metric.example_details(
        golden["peaky_n128__unlearned"], golden["peaky_n128__retrained"]
    )
    assert (details.family == "collapsed").sum() >= 1
    assert np.all(details.epsilon[details.family == "collapsed"] == metric.EPSILON_CAP)


# ------------------------------------------------------------- the torch grid, bit for bit
@pytest.mark.parametrize("seed", range(5))
def test_single_threshold_grid_matches_torch_linspace(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        lo, hi = np.sort(rng.normal(0, 20, size=2))
        steps = math.ceil((hi - lo) * metric.THRESHOLDS_PER_UNIT)
        expected = torch.linspace(
            torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64), steps
        ).numpy()
        np.testing.assert_array_equal(metric.torch_linspace_float32(lo, hi, steps), expected)


def test_grid_of_one_and_zero_steps_match_torch():
    one = torch.linspace(torch.tensor(1.5, dtype=torch.float64), torch.tensor(2.0), 1).numpy()
    np.testing.assert_array_equal(metric.torch_linspace_float32(1.5, 2.0, 1), one)
    assert metric.torch_linspace_float32(1.0, 1.0, 0).size == 0


# ------------------------------------------------------------- against a literal reading
_confidences = hnp.arrays(
    np.float64,
    st.tuples(st.integers(4, 24), st.integers(1, 3)),
    elements=st.floats(-6, 6, allow_nan=False, width=32),
)


@settings(max_examples=25, deadline=None)
@given(_confidences, st.floats(-2, 2), st.floats(0.2, 3))
def test_fast_scorer_equals_rule_by_rule_transcription(u, shift, scale):
    r = u[::-1] * scale + shift  # same shape, a different distribution
    np.testing.assert_array_equal(
        metric.per_example_epsilons(u, r), per_example_epsilons_naive(u, r)
    )


def test_fast_scorer_equals_transcription_with_integer_ties():
    rng = np.random.default_rng(7)
    u = rng.integers(-2, 3, size=(32, 8)).astype(float)
    r = rng.integers(-1, 4, size=(32, 8)).astype(float)
    np.testing.assert_array_equal(
        metric.per_example_epsilons(u, r), per_example_epsilons_naive(u, r)
    )


# ----------------------------------------------------------------------------- properties
@settings(max_examples=30, deadline=None)
@given(_confidences, st.randoms(use_true_random=False))
def test_invariant_to_model_order(u, random):
    r = np.sin(u * 3.0) * 2.0 + 0.5
    perm_u = np.array(random.sample(range(u.shape[0]), u.shape[0]))
    perm_r = np.array(random.sample(range(u.shape[0]), u.shape[0]))
    np.testing.assert_array_equal(
        metric.per_example_epsilons(u, r), metric.per_example_epsilons(u[perm_u], r[perm_r])
    )


@settings(max_examples=30, deadline=None)
@given(_confidences)
def test_swapping_groups_keeps_epsilons_where_medians_differ(u):
    r = np.cos(u) * 3.0 - 0.25
    differ = np.median(u, axis=0) != np.median(r, axis=0)
    a = metric.per_example_epsilons(u, r)
    b = metric.per_example_epsilons(r, u)
    np.testing.assert_array_equal(a[differ], b[differ])


@settings(max_examples=30, deadline=None)
@given(_confidences, st.floats(-3, 3))
def test_forget_quality_is_a_fraction(u, shift):
    f = metric.forget_quality(u, u[::-1] + shift)
    assert 0.0 <= f <= 1.0


@settings(max_examples=30, deadline=None)
@given(_confidences)
def test_identical_groups_score_the_top_bucket(u):
    details = metric.example_details(u, u.copy())
    assert np.all(details.epsilon == 0.0)
    assert np.all(details.points == 1.0)
    assert metric.forget_quality(u, u.copy()) == 1.0


@settings(max_examples=30, deadline=None)
@given(st.integers(4, 64), st.floats(0.5, 20), st.integers(0, 2**32 - 1))
def test_perfectly_separated_example_scores_zero(n, gap, seed):
    rng = np.random.default_rng(seed)
    u = rng.uniform(0, 1, size=(n, 1))
    r = rng.uniform(0, 1, size=(n, 1)) + 1 + gap
    details = metric.example_details(u, r)
    assert details.epsilon[0] == metric.EPSILON_CAP
    assert details.points[0] == 0.0
    assert details.bucket[0] == -1


# ----------------------------------------------------------------------------- degenerate
def test_constant_equal_columns_score_zero():
    u = np.full((16, 2), 3.0)
    eps = metric.per_example_epsilons(u, u.copy())
    np.testing.assert_array_equal(eps, [0.0, 0.0])
    assert metric.example_details(u, u.copy()).family.tolist() == ["none", "none"]


def test_constant_different_columns_score_the_cap():
    eps = metric.per_example_epsilons(np.zeros((16, 1)), np.ones((16, 1)))
    assert eps.tolist() == [metric.EPSILON_CAP]


def test_one_collapsed_group_is_capped_without_attack():
    rng = np.random.default_rng(0)
    u = np.full((32, 1), 0.25) + rng.normal(0, 1e-6, size=(32, 1))
    r = rng.normal(0, 1, size=(32, 1))
    details = metric.example_details(u, r)
    assert details.family.tolist() == ["collapsed"]
    assert details.epsilon.tolist() == [metric.EPSILON_CAP]


# ----------------------------------------------------------------------------- buckets
def test_buckets_for_512_models():
    points = metric.bucket_points(512)
    assert metric.max_epsilon(512) == 7.0
    assert points.size == 14
    assert points[0] == 1.0 and points[-1] == 2.0**-13
    bucket, pts = metric.epsilon_points([0.0, 0.49, 0.5, 6.99, 7.0, 50.0], 512)
    assert bucket.tolist() == [0, 0, 1, 13, -1, -1]
    assert pts.tolist() == [1.0, 1.0, 0.5, 2.0**-13, 0.0, 0.0]


def test_forget_quality_is_mean_points():
    rng = np.random.default_rng(1)
    u, r = rng.normal(0, 1, (32, 40)), rng.normal(0.4, 1, (32, 40))
    _, points = metric.epsilon_points(metric.per_example_epsilons(u, r), 32)
    assert metric.forget_quality(u, r) == pytest.approx(points.mean(), abs=1e-15)


# ----------------------------------------------------------------------------- final score
def test_final_score_multiplies_the_ratios():
    score = metric.final_score(
        0.5,
        retain_acc_unlearned=0.9,
        retain_acc_retrained=0.95,
        test_acc_unlearned=0.8,
        test_acc_retrained=0.85,
    )
    assert score == pytest.approx(0.5 * (0.9 / 0.95) * (0.8 / 0.85), rel=1e-15)


def test_final_score_ratio_may_exceed_one():
    score = metric.final_score(
        1.0,
        retain_acc_unlearned=1.0,
        retain_acc_retrained=0.5,
        test_acc_unlearned=0.9,
        test_acc_retrained=0.9,
    )
    assert score == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retain_acc_retrained": 0.0}, "retain_acc_retrained is 0"),
        ({"test_acc_unlearned": 1.5}, "test_acc_unlearned must be a fraction"),
        ({"retain_acc_unlearned": float("nan")}, "retain_acc_unlearned must be a fraction"),
    ],
)
def test_final_score_rejects_bad_accuracies(kwargs, message):
    values = dict(
        retain_acc_unlearned=0.9,
        retain_acc_retrained=0.9,
        test_acc_unlearned=0.9,
        test_acc_retrained=0.9,
    )
    values.update(kwargs)
    with pytest.raises(ValueError, match=message):
        metric.final_score(0.5, **values)


# ----------------------------------------------------------------------------- bad input
def _bad(u, r, match):
    with pytest.raises(ValueError, match=match):
        metric.per_example_epsilons(u, r)


def test_nan_is_refused_with_the_example_index():
    u = np.zeros((8, 5))
    r = np.ones((8, 5))
    u[3, 2] = np.nan
    _bad(u, r, r"unlearned holds NaN or inf at forget example 2")
    r[1, 4] = np.inf
    _bad(np.zeros((8, 5)), r, r"retrained holds NaN or inf at forget example 4")


def test_shapes_must_agree():
    _bad(np.zeros((8, 5)), np.zeros((8, 4)), r"same shape .* \(8, 5\) and \(8, 4\)")
    _bad(np.zeros(8), np.zeros(8), r"2-D")


def test_too_few_models_or_examples():
    _bad(np.zeros((1, 5)), np.zeros((1, 5)), r"at least 2 models")
    _bad(np.zeros((8, 0)), np.zeros((8, 0)), r"E = 0")


def test_non_numeric_input_is_refused():
    _bad(np.array([["a", "b"], ["c", "d"]]), np.zeros((2, 2)), r"real numbers")


def test_logits_checks():
    logits = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"target 4 at example 1 is outside the 4 classes"):
        metric.logit_scaled_confidence(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"target -1 at example 0"):
        metric.logit_scaled_confidence(logits, np.array([-1, 0, 1]))
    with pytest.raises(ValueError, match=r"has 2 labels but logits have 3 examples"):
        metric.logit_scaled_confidence(logits, np.array([0, 1]))
    bad = logits.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf at example 2"):
        metric.logit_scaled_confidence(bad, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"integer"):
        metric.logit_scaled_confidence(logits, np.array([0.0, 1.0, 2.0]))


def test_logits_of_many_models_and_no_mutation():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 5, size=(4, 6, 10))
    targets = rng.integers(0, 10, size=6)
    before = logits.copy()
    conf = metric.logit_scaled_confidence(logits, targets)
    np.testing.assert_array_equal(logits, before)
    assert conf.shape == (4, 6)
    np.testing.assert_array_equal(conf[2], metric.logit_scaled_confidence(logits[2], targets))
    # ln(p / (1 - p)) for two classes with logits (a, 0): conf = a.
    two = metric.logit_scaled_confidence(np.array([[1.5, 0.0], [0.0, 2.0]]), np.array([0, 0]))
    np.testing.assert_allclose(two, [1.5, -2.0], atol=1e-12)


def test_delta_must_be_a_probability():
    with pytest.raises(ValueError, match="delta"):
        metric.per_example_epsilons(np.zeros((4, 1)), np.ones((4, 1)), delta=0.0)
