"""The per-example diagnosis: exact shares on constructed runs, spread, and bad shapes."""

import numpy as np
import pytest

from local_eval.reporting.diagnosis import diagnose

N, M, E = 6, 5, 40


@pytest.fixture(scope="module")
def groups():
    rng = np.random.default_rng(3)
    references = rng.normal(2.0, 1.0, size=(N, E))
    originals = rng.normal(4.0, 1.5, size=(M, E))
    original = rng.normal(4.0, 1.5, size=E)
    return references, originals, original


def test_runs_built_from_known_shares_give_them_back(groups):
    references, originals, original = groups
    memorisation = originals.mean(0) - references.mean(0)
    own = original - originals.mean(0)
    # each run: a reference's seed spread, 0.7 of the memorisation, 0.4 of the original's own
    # deviation, 0.25 lower overall
    runs = references + 0.7 * memorisation + 0.4 * own - 0.25
    d = diagnose(runs, references, originals, original=original)
    assert d["kept_memorisation"] == pytest.approx(0.7, abs=1e-9)
    assert d["kept_own"] == pytest.approx(0.4, abs=1e-9)
    assert d["unexplained"] == pytest.approx(0.0, abs=1e-9)
    error = 0.7 * memorisation + 0.4 * own - 0.25
    assert d["shift"] == pytest.approx(error.mean())
    assert d["mean_error"] == pytest.approx(np.abs(error).mean())
    assert d["spread_ratio"] == pytest.approx(1.0)  # the references' own spread, moved
    assert d["memorisation"] == pytest.approx(np.abs(memorisation).mean())
    assert d["own_deviation"] == pytest.approx(np.abs(own).mean())


def test_without_the_original_only_memorisation_is_split_off(groups):
    references, originals, _ = groups
    memorisation = originals.mean(0) - references.mean(0)
    extra = np.sin(np.arange(E))  # a pattern the fit has no column for
    runs = references + 0.5 * memorisation + extra
    d = diagnose(runs, references, originals)
    assert d["kept_own"] is None and d["own_deviation"] is None
    centred_extra = extra - extra.mean()
    m = memorisation - memorisation.mean()
    leak = (centred_extra @ m) / (m @ m)  # the part of the pattern along the memorisation
    assert d["kept_memorisation"] == pytest.approx(0.5 + leak)
    assert d["unexplained"] == pytest.approx(np.abs(centred_extra - leak * m).mean())


def test_spread_is_the_median_ratio_of_standard_deviations(groups):
    references, originals, _ = groups
    centre = references.mean(0)
    runs = centre + 2.0 * (references - centre)  # twice as wide, same means
    d = diagnose(runs, references, originals)
    assert d["spread_ratio"] == pytest.approx(2.0)
    assert d["mean_error"] == pytest.approx(0.0, abs=1e-12)
    tight = np.broadcast_to(centre, references.shape)  # one model N times: no spread at all
    assert diagnose(tight, references, originals)["spread_ratio"] == 0.0


def test_examples_the_references_agree_on_exactly_are_left_out_of_the_spread(groups):
    references, originals, _ = groups
    references = references.copy()
    references[:, :10] = 1.5  # every reference gives the same confidence
    runs = references.copy()
    runs[:, :10] += np.arange(N)[:, None]  # infinite ratio there, if it were counted
    assert diagnose(runs, references, originals)["spread_ratio"] == pytest.approx(1.0)
    same = np.full((N, E), 1.0)
    assert diagnose(same, same, originals)["spread_ratio"] is None


def test_independent_models_keep_little_of_either_when_the_groups_are_large():
    rng = np.random.default_rng(4)
    many = 2000  # so the references' and originals' means are exact to about 0.03
    truth = rng.normal(2.0, 1.0, size=E)  # each example's retrained confidence
    memorised = truth + rng.normal(2.0, 1.0, size=E)  # originals: higher, by example
    references = truth + rng.normal(size=(many, E))
    originals = memorised + rng.normal(size=(many, E))
    original = memorised + rng.normal(size=E)
    ceiling = truth + rng.normal(size=(many, E))
    d = diagnose(ceiling, references, originals, original=original)
    assert abs(d["kept_memorisation"]) < 0.05 and abs(d["kept_own"]) < 0.05
    assert d["mean_error"] < 0.05 and d["spread_ratio"] == pytest.approx(1.0, abs=0.05)


def test_the_references_sampling_noise_leans_the_share_at_small_n():
    """The references' mean is in both the error and the memorisation pattern, so with few
    references an independent group shows a share above 0 (the ceiling's row says how much)."""
    rng = np.random.default_rng(5)
    truth = rng.normal(2.0, 1.0, size=E)
    memorised = truth + rng.normal(2.0, 1.0, size=E)
    shares = []
    for _ in range(200):
        references = truth + rng.normal(size=(4, E))
        originals = memorised + rng.normal(size=(200, E))
        ceiling = truth + rng.normal(size=(200, E))
        shares.append(diagnose(ceiling, references, originals)["kept_memorisation"])
    # the noise's variance (1/4) over the pattern's (1 + 1/4): about 0.2
    assert np.mean(shares) == pytest.approx(0.25 / 1.25, abs=0.05)


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((N, E), (N, E), (M, E - 1)), "same forget examples"),
        (((N, E), (N,), (M, E)), "(models, examples)"),
        (((0, E), (N, E), (M, E)), "at least one model"),
    ],
)
def test_bad_shapes_are_refused(shapes, message):
    arrays = [np.zeros(s) for s in shapes]
    with pytest.raises(ValueError, match=message):
        diagnose(*arrays)


def test_an_original_of_the_wrong_length_is_refused(groups):
    references, originals, original = groups
    with pytest.raises(ValueError, match="one confidence per example"):
        diagnose(references, references, originals, original=original[:-1])


def test_non_finite_confidences_are_refused_as_the_metric_refuses_them(groups):
    references, originals, original = groups
    broken = references.copy()
    broken[2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or inf at example 5"):
        diagnose(broken, references, originals)
    bad_original = original.copy()
    bad_original[7] = np.inf
    with pytest.raises(ValueError, match="NaN or inf at example 7"):
        diagnose(references, references, originals, original=bad_original)
