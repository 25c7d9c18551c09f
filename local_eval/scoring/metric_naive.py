"""A straightforward transcription of the competition score: every rule against every model.

This is the slow baseline the fast scorer (:mod:`local_eval.scoring.metric`) is checked and timed
against. It follows ``shared/spec/metric.md`` literally: it materialises the ``(N, rules)``
indicator matrices the organisers' code builds, averages float32 indicators into rates and
applies step 5 rule by rule. Use it on small slices only: it is orders of magnitude slower
than the fast scorer (``python -m bench.metric`` times the two).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from local_eval.scoring.metric import (
    COLLAPSE_RATIO,
    DELTA,
    EPSILON_CAP,
    INTERVAL_BUFFER,
    N_LEFT_EDGES,
    THRESHOLDS_PER_UNIT,
    torch_linspace_float32,
)


def _rates(predicted_pos: np.ndarray) -> np.ndarray:
    """Share of models (rows) predicted pos for each rule (column), as float32 means."""
    return predicted_pos.astype(np.float32).mean(axis=0, dtype=np.float32)


def _rule_epsilons(tpr, fnr, fpr, tnr, delta: float) -> np.ndarray:
    """Step 5 for each rule: inf, NaN (discarded) or the clipped epsilon, float32."""
    eps = np.zeros(tpr.shape, dtype=np.float32)
    perfect = (fpr + fnr == 0) & (tpr + tnr == 2)
    eps[perfect] = np.inf
    eps[(eps == 0) & (fpr * fnr == 0)] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs: discarded rules
        value = np.nanmax(
            [np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr)],
            axis=0,
        )
    value = np.clip(value, 0, None)
    return np.where(eps == 0, value, eps).astype(np.float32)


def _example_epsilon(pos: np.ndarray, neg: np.ndarray, delta: float) -> float:
    pos_diff, neg_diff = pos.max() - pos.min(), neg.max() - neg.min()
    largest = max(pos_diff, neg_diff)
    smallest = min(pos_diff, neg_diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        if np.float64(smallest) / np.float64(largest) < COLLAPSE_RATIO:
            return EPSILON_CAP

    # Interval rules: "pos" is the group with the smaller range.
    p, q = (neg, pos) if pos_diff >= neg_diff else (pos, neg)
    lo, hi = p.min() + smallest - INTERVAL_BUFFER, p.max() + INTERVAL_BUFFER
    rights = np.linspace(lo, hi, num=int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
    lefts = [
        np.linspace(r - smallest - INTERVAL_BUFFER, r - smallest + INTERVAL_BUFFER, N_LEFT_EDGES)
        for r in rights
    ]
    left = np.concatenate(lefts)[None, :]
    right = np.repeat(rights, N_LEFT_EDGES)[None, :]
    inside_p = (left <= p[:, None]) & (p[:, None] <= right)
    inside_q = (left <= q[:, None]) & (q[:, None] <= right)
    double = _rule_epsilons(
        _rates(inside_p), _rates(~inside_p), _rates(inside_q), _rates(~inside_q), delta
    )

    # Single thresholds over both groups' range.
    both = np.concatenate([pos, neg])
    n_thresholds = math.ceil((both.max() - both.min()) * THRESHOLDS_PER_UNIT)
    t = torch_linspace_float32(both.min(), both.max(), n_thresholds).astype(np.float64)
    above_pos = pos[:, None] >= t[None, :]
    above_neg = neg[:, None] >= t[None, :]
    single = _rule_epsilons(
        _rates(above_pos), _rates(~above_pos), _rates(above_neg), _rates(~above_neg), delta
    )

    every = np.concatenate([double, single])
    kept = every[~np.isnan(every)]
    if kept.size == 0:
        return 0.0
    return float(np.clip(kept.max(), 0, EPSILON_CAP))


def per_example_epsilons_naive(unlearned, retrained, *, delta: float = DELTA) -> np.ndarray:
    """Same contract as :func:`local_eval.scoring.metric.per_example_epsilons`, rule by rule."""
    u = np.asarray(unlearned, dtype=np.float64)
    r = np.asarray(retrained, dtype=np.float64)
    out = np.empty(u.shape[1])
    for i in range(u.shape[1]):
        retrain_is_pos = np.median(r[:, i]) > np.median(u[:, i])
        pos, neg = (r[:, i], u[:, i]) if retrain_is_pos else (u[:, i], r[:, i])
        out[i] = _example_epsilon(pos, neg, delta)
    return out
