"""The competition's forgetting score, exactly as the organisers compute it, only faster.

This is the NeurIPS 2023 Machine Unlearning score (see ``shared/spec/metric.md``): for every
forget example, the strongest of ~160,000 threshold attacks that try to tell N unlearned models
from N retrained ones gives an epsilon; epsilons earn points in buckets; F is the mean points.

Pure numpy: arrays in, numbers out, no torch and no files. Shapes used below:

- ``N``: models per group (the competition used 512), the same for both groups;
- ``E``: forget examples, in a fixed order;
- ``C``: classes.

Why it is fast and still exact
------------------------------
The reference tiles every rule against every model (an ``N x rules`` tensor per example). The
counts a rule needs are "how many models of a group fall at or above / inside a threshold",
which a binary search into the sorted column answers with identical results. The epsilon of a
rule depends only on the two counts, so it is looked up in an ``(N+1) x (N+1)`` table computed
once per N with the reference's own float32 arithmetic. The thresholds themselves are rebuilt
bit for bit: ``np.linspace`` for the interval rules (as the reference), and an emulation of
``torch.linspace`` in float32 for the single-threshold rules (the reference calls torch there,
whose default dtype is float32 and whose CPU kernel fuses multiply-add).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "BUCKET_WIDTH",
    "DELTA",
    "EPSILON_CAP",
    "ExampleDetails",
    "bucket_points",
    "epsilon_points",
    "example_details",
    "final_score",
    "forget_quality",
    "logit_scaled_confidence",
    "max_epsilon",
    "per_example_epsilons",
]

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100  # grid density: thresholds per unit of confidence
BUCKET_WIDTH = 0.5
INTERVAL_BUFFER = 2.0  # how far interval edges may move past the narrow group's range
N_LEFT_EDGES = math.ceil(2 * INTERVAL_BUFFER * THRESHOLDS_PER_UNIT)  # 400
COLLAPSE_RATIO = 0.01  # range ratio under which an example is capped without an attack
_DISCARDED = np.float32(-1.0)  # table value of a rule the reference drops (its NaN)

FAMILY_NONE = "none"  # no rule survived: epsilon 0
FAMILY_COLLAPSED = "collapsed"  # one group's range collapsed: epsilon capped, no attack
FAMILY_SINGLE = "single"
FAMILY_DOUBLE = "double"


# --------------------------------------------------------------------------------------
# Input checks (raise ValueError that says what is wrong and where)
# --------------------------------------------------------------------------------------
def _as_float_array(x, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be read as an array: {exc}") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _first_bad_column(arr: np.ndarray) -> int | None:
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    return int(np.argwhere(bad)[0][-1])


def _check_confidences(unlearned, retrained) -> tuple[np.ndarray, np.ndarray]:
    u = _as_float_array(unlearned, "unlearned")
    r = _as_float_array(retrained, "retrained")
    for name, arr in (("unlearned", u), ("retrained", r)):
        if arr.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D (N models, E examples) matrix of confidences, "
                f"got shape {arr.shape}"
            )
    if u.shape != r.shape:
        raise ValueError(
            f"unlearned and retrained must have the same shape (N models, E examples); "
            f"got {u.shape} and {r.shape}"
        )
    n, e = u.shape
    if n < 2:
        raise ValueError(f"need at least 2 models per group, got N = {n}")
    if e == 0:
        raise ValueError("no forget examples: the matrices have E = 0 columns")
    for name, arr in (("unlearned", u), ("retrained", r)):
        col = _first_bad_column(arr)
        if col is not None:
            raise ValueError(
                f"{name} holds NaN or inf at forget example {col}; "
                "check the model outputs for that example"
            )
    return u.astype(np.float64, copy=False), r.astype(np.float64, copy=False)


# --------------------------------------------------------------------------------------
# Step 1: logit-scaled confidence
# --------------------------------------------------------------------------------------
def logit_scaled_confidence(logits, targets) -> np.ndarray:
    """Logit-scaled confidence ``ln p_y - ln(sum of the other p)`` of each row.

    Args:
        logits: ``(E, C)`` logits of one model, or ``(N, E, C)`` for N models.
        targets: ``(E,)`` true labels in ``[0, C)``.

    Returns:
        float64 ``(E,)``, or ``(N, E)`` for 3-D logits.

    Follows the reference step by step (max subtracted and ``exp`` taken in the logits'
    own dtype, then float64), without modifying the caller's array.
    """
    z = _as_float_array(logits, "logits")
    t = np.asarray(targets)
    if z.ndim not in (2, 3):
        raise ValueError(f"logits must be (E, C) or (N, E, C), got shape {z.shape}")
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"targets must be a 1-D integer array, got shape {t.shape}, {t.dtype}")
    n_examples, n_classes = z.shape[-2], z.shape[-1]
    if t.shape[0] != n_examples:
        raise ValueError(f"targets has {t.shape[0]} labels but logits have {n_examples} examples")
    if n_examples == 0:
        raise ValueError("no examples: logits have E = 0 rows")
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, logits have C = {n_classes}")
    out_of_range = (t < 0) | (t >= n_classes)
    if out_of_range.any():
        i = int(np.argmax(out_of_range))
        raise ValueError(
            f"target {int(t[i])} at example {i} is outside the {n_classes} classes [0, {n_classes})"
        )
    finite = np.isfinite(z).reshape(-1, n_examples, n_classes).all(axis=(0, 2))
    if not finite.all():
        i = int(np.argmin(finite))
        raise ValueError(f"logits hold NaN or inf at example {i}")

    lead = z.shape[:-2]
    rows = z.reshape(-1, n_classes)
    labels = np.broadcast_to(t, (*lead, n_examples)).reshape(-1)
    rows = rows - np.max(rows, axis=1, keepdims=True)
    probs = np.array(np.exp(rows), dtype=np.float64)
    probs /= np.sum(probs, axis=1, keepdims=True)
    index = np.arange(rows.shape[0])
    p_true = probs[index, labels]
    probs[index, labels] = 0.0
    p_rest = np.sum(probs, axis=1)
    conf = np.log(p_true + 1e-45) - np.log(p_rest + 1e-45)
    return conf.reshape(*lead, n_examples)


# --------------------------------------------------------------------------------------
# Steps 4-5: the epsilon of every possible pair of counts
# --------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _epsilon_table(n_models: int, delta: float) -> np.ndarray:
    """float32 ``(2N+1, 2N+1)``: epsilon of a rule with ``tp`` pos and ``fp`` neg models inside.

    Entry ``[tp + N, fp + N]``. Rates are float32 fractions, as the reference's means of
    float32 indicators. A perfect rule is ``inf``; a rule with exactly one zero rate, or whose
    epsilon is NaN, is ``-1`` (the reference discards those). Negative counts, which an empty
    interval (left edge beyond the right one) produces in the counting below, are discarded
    too, so no rule needs a special case.
    """
    n = np.float32(n_models)
    counts = np.arange(n_models + 1, dtype=np.float32)
    tpr = (counts / n)[:, None]
    fnr = ((n - counts) / n)[:, None]
    fpr = (counts / n)[None, :]
    tnr = ((n - counts) / n)[None, :]
    tpr, fnr, fpr, tnr = np.broadcast_arrays(tpr, fnr, fpr, tnr)
    one_minus_delta = np.float32(1 - delta)  # the reference mixes a Python float into float32
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(one_minus_delta - fpr) - np.log(fnr)
        b = np.log(one_minus_delta - fnr) - np.log(fpr)
        eps = np.fmax(a, b)  # NaN only where both are NaN, as np.nanmax over the pair
    eps = np.maximum(eps, np.float32(0.0))  # np.clip keeps NaN, so does np.maximum
    perfect = (fpr + fnr == 0) & (tpr + tnr == 2)
    one_zero = (fpr * fnr == 0) & ~perfect
    counted = np.where(perfect, np.float32(np.inf), eps).astype(np.float32)
    counted[one_zero | np.isnan(counted)] = _DISCARDED
    table = np.full((2 * n_models + 1, 2 * n_models + 1), _DISCARDED, dtype=np.float32)
    table[n_models:, n_models:] = counted
    table.setflags(write=False)
    return table


@lru_cache(maxsize=1)
def _anti_diagonals() -> np.ndarray:
    """``(N_LEFT_EDGES, N_LEFT_EDGES)`` index ``i + j``: which anti-diagonal each rule is on."""
    index = np.add.outer(np.arange(N_LEFT_EDGES), np.arange(N_LEFT_EDGES))
    index.setflags(write=False)
    return index


def torch_linspace_float32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps)`` on CPU with the default float32 dtype, bit for bit.

    The kernel computes ``start + step * i`` for the first half and ``end - step * (steps-1-i)``
    for the second, in float32 with a fused multiply-add (one rounding): the product is exact
    in float64, so a float64 sum rounded once to float32 reproduces it.
    """
    if steps <= 0:
        return np.empty(0, dtype=np.float32)
    s, e = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([s], dtype=np.float32)
    step = np.float64((e - s) / np.float32(steps - 1))
    i = np.arange(steps, dtype=np.float64)
    half = steps // 2
    low = np.float64(s) + step * i
    high = np.float64(e) - step * (steps - 1 - i)
    return np.where(i < half, low, high).astype(np.float32)


# --------------------------------------------------------------------------------------
# Steps 2-5 for one example
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Best:
    epsilon: float
    family: str
    thresholds: tuple[float, ...]
    fpr: float
    fnr: float


def _count_at_or_above(sorted_col: np.ndarray, t: np.ndarray) -> np.ndarray:
    return sorted_col.size - np.searchsorted(sorted_col, t, side="left")


def _single_rules(pos: np.ndarray, neg: np.ndarray, table: np.ndarray):
    """Epsilons of every ``conf >= t`` rule, in the reference's grid order."""
    all_confs = np.concatenate([pos, neg])
    lo, hi = all_confs.min(), all_confs.max()
    grid = torch_linspace_float32(lo, hi, math.ceil((hi - lo) * THRESHOLDS_PER_UNIT))
    t = grid.astype(np.float64)
    tp = _count_at_or_above(np.sort(pos), t)
    fp = _count_at_or_above(np.sort(neg), t)
    n = pos.size
    return table[tp + n, fp + n], grid, tp, fp


@dataclass(frozen=True)
class _Intervals:
    """The interval rules of one example: ``eps[i, j]`` for right edge i and left edge j."""

    eps: np.ndarray  # float32 (right edges, N_LEFT_EDGES)
    code: np.ndarray  # (tp + N) * (2N + 1) + (fp + N) of each rule
    right: np.ndarray  # (right edges,)
    width: float

    def left_edge(self, i: int, j: int) -> float:
        base = self.right[i] - self.width
        return float(np.linspace(base - INTERVAL_BUFFER, base + INTERVAL_BUFFER, N_LEFT_EDGES)[j])


def _double_rules(pos: np.ndarray, neg: np.ndarray, table: np.ndarray) -> _Intervals:
    """Epsilons of every ``l <= conf <= r`` rule, ``(right edges, N_LEFT_EDGES)``, row-major."""
    pos_diff = pos.max() - pos.min()
    neg_diff = neg.max() - neg.min()
    width = neg_diff if pos_diff > neg_diff else pos_diff
    if pos_diff >= neg_diff:  # "pos" becomes the group with the smaller range
        pos, neg = neg, pos
    lo = pos.min() + width - INTERVAL_BUFFER
    hi = pos.max() + INTERVAL_BUFFER
    n_right = int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT))
    right = np.linspace(lo, hi, num=n_right)

    # Both groups' counts below any edge come from one search into the merged sorted models,
    # and both counts travel as one integer code into the epsilon table.
    n = pos.size
    span = 2 * n + 1
    merged = np.concatenate([pos, neg])
    order = np.argsort(merged, kind="stable")
    values = merged[order]
    is_pos = order < n
    below = np.concatenate([[0], np.cumsum(is_pos)]) * span + np.concatenate(
        [[0], np.cumsum(~is_pos)]
    )
    code_right = below[np.searchsorted(values, right, side="right")] + n * span + n

    # Left edge j of right edge i lies, up to a few ulps, at the common point i + j of one
    # grid: when 400 right edges span 4 units, their spacing equals the left edges'. Points
    # of that grid with no model within the rounding tolerance give every rule on their
    # anti-diagonal the same counts; only the others are searched edge by edge.
    base = right - width
    magnitude = max(abs(lo), abs(hi)) + width + 2 * INTERVAL_BUFFER
    tol = 64 * np.spacing(magnitude)
    on_one_grid = n_right == N_LEFT_EDGES and abs((hi - lo) - 2 * INTERVAL_BUFFER) <= tol / 8
    if on_one_grid:
        step = 2 * INTERVAL_BUFFER / (N_LEFT_EDGES - 1)
        grid = (lo - width - INTERVAL_BUFFER) + np.arange(2 * N_LEFT_EDGES - 1) * step
        k_low = np.searchsorted(values, grid - tol, side="left")
        k_high = np.searchsorted(values, grid + tol, side="right")
        diagonals = _anti_diagonals()
        code_left = below[k_low][diagonals]
        unsure = (k_low != k_high)[diagonals]
        if unsure.any():
            left = np.linspace(
                base - INTERVAL_BUFFER, base + INTERVAL_BUFFER, N_LEFT_EDGES, axis=-1
            )
            code_left[unsure] = below[np.searchsorted(values, left[unsure], side="left")]
    else:
        left = np.linspace(base - INTERVAL_BUFFER, base + INTERVAL_BUFFER, N_LEFT_EDGES, axis=-1)
        code_left = below[np.searchsorted(values, left.ravel(), side="left")].reshape(left.shape)
    code = code_right[:, None] - code_left
    return _Intervals(table.ravel()[code], code, right, float(width))


def _epsilon_of_example(
    unlearned: np.ndarray, retrained: np.ndarray, table: np.ndarray, *, want_rule: bool
) -> tuple[float, _Best | None]:
    # Step 2: "pos" is the group with the larger median (ties: unlearned).
    retrain_is_pos = np.median(retrained) > np.median(unlearned)
    pos, neg = (retrained, unlearned) if retrain_is_pos else (unlearned, retrained)

    # Step 3: a collapsed group is capped without an attack (a NaN ratio, both ranges zero,
    # is not "below 1%" and goes on to the attack, as in the reference).
    pos_diff = pos.max() - pos.min()
    neg_diff = neg.max() - neg.min()
    largest = pos_diff if pos_diff > neg_diff else neg_diff
    smallest = neg_diff if pos_diff > neg_diff else pos_diff
    with np.errstate(divide="ignore", invalid="ignore"):
        collapsed = bool(np.float64(smallest) / np.float64(largest) < COLLAPSE_RATIO)
    if collapsed:
        best = _Best(EPSILON_CAP, FAMILY_COLLAPSED, (), math.nan, math.nan)
        return EPSILON_CAP, best if want_rule else None

    # Steps 4-5: both families; the example's epsilon is the largest surviving rule.
    intervals = _double_rules(pos, neg, table)
    s_eps, grid, s_tp, s_fp = _single_rules(pos, neg, table)
    d_top = intervals.eps.max()
    top = max(d_top, s_eps.max() if s_eps.size else _DISCARDED)
    if top == _DISCARDED:  # no rule survived (e.g. identical constant columns)
        best = _Best(0.0, FAMILY_NONE, (), math.nan, math.nan)
        return 0.0, best if want_rule else None
    epsilon = float(min(max(top, 0.0), EPSILON_CAP))
    if not want_rule:
        return epsilon, None

    # The reference's argmax: interval rules first (row-major), then single thresholds.
    n = pos.size
    if d_top == top:
        i, j = np.unravel_index(int(np.argmax(intervals.eps == top)), intervals.eps.shape)
        tp, fp = (c - n for c in divmod(int(intervals.code[i, j]), 2 * n + 1))
        family = FAMILY_DOUBLE
        thresholds = (intervals.left_edge(i, j), float(intervals.right[i]))
    else:
        k = int(np.argmax(s_eps == top))
        tp, fp = int(s_tp[k]), int(s_fp[k])
        family, thresholds = FAMILY_SINGLE, (float(grid[k]),)
    fpr = float(np.float32(fp) / np.float32(n))
    fnr = float(np.float32(n - tp) / np.float32(n))
    return epsilon, _Best(epsilon, family, thresholds, fpr, fnr)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------
def per_example_epsilons(unlearned, retrained, *, delta: float = DELTA) -> np.ndarray:
    """Epsilon of every forget example, as the competition computes it.

    Args:
        unlearned: ``(N, E)`` logit-scaled confidences of the N unlearned models.
        retrained: ``(N, E)`` the same for the N retrained models.
        delta: the delta of (epsilon, delta)-indistinguishability.

    Returns:
        float64 ``(E,)`` in ``[0, EPSILON_CAP]``.
    """
    u, r = _check_confidences(unlearned, retrained)
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    table = _epsilon_table(u.shape[0], float(delta))
    out = np.empty(u.shape[1], dtype=np.float64)
    for i in range(u.shape[1]):
        out[i], _ = _epsilon_of_example(u[:, i], r[:, i], table, want_rule=False)
    return out


def max_epsilon(n_models: int) -> float:
    """The reference's back-of-the-envelope largest epsilon N models can show: ceil(ln(N-1))."""
    if n_models < 2:
        raise ValueError(f"need at least 2 models per group, got N = {n_models}")
    return float(np.ceil(np.log(n_models - 1)))


def bucket_points(n_models: int) -> np.ndarray:
    """Points of each bucket ``[0.5 k, 0.5 (k+1))`` that exists for N models: 1, 1/2, 1/4, ..."""
    n_buckets = int(max_epsilon(n_models) / BUCKET_WIDTH)
    return 0.5 ** np.arange(n_buckets, dtype=np.float64)


def epsilon_points(epsilons, n_models: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket index (``-1`` beyond the last bucket) and points of each epsilon."""
    eps = np.asarray(epsilons, dtype=np.float64)
    points_of = bucket_points(n_models)
    bucket = np.floor(eps / BUCKET_WIDTH).astype(np.int64)
    bucket = np.where(bucket < points_of.size, bucket, -1)
    points = np.where(bucket >= 0, points_of[np.clip(bucket, 0, None)] if points_of.size else 0, 0)
    return bucket, points.astype(np.float64)


def forget_quality(unlearned, retrained) -> float:
    """F: mean bucket points over the forget examples, in [0, 1].

    Args:
        unlearned: ``(N, E)`` confidences of the unlearned models.
        retrained: ``(N, E)`` confidences of the retrained models.
    """
    eps = per_example_epsilons(unlearned, retrained)
    n_models, n_examples = np.shape(unlearned)
    _, points = epsilon_points(eps, n_models)
    return float(np.sum(points) / n_examples)


def final_score(
    forget_quality: float,
    *,
    retain_acc_unlearned: float,
    retain_acc_retrained: float,
    test_acc_unlearned: float,
    test_acc_retrained: float,
) -> float:
    """``F * (RA_U / RA_R) * (TA_U / TA_R)``; accuracies are means over each group's models.

    No cap: a utility ratio above 1 raises the score, as in the competition.
    """
    values = {
        "forget_quality": forget_quality,
        "retain_acc_unlearned": retain_acc_unlearned,
        "retain_acc_retrained": retain_acc_retrained,
        "test_acc_unlearned": test_acc_unlearned,
        "test_acc_retrained": test_acc_retrained,
    }
    for name, value in values.items():
        v = float(value)
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    for name in ("retain_acc_retrained", "test_acc_retrained"):
        if float(values[name]) == 0.0:
            raise ValueError(f"{name} is 0: the retrained models learned nothing; check them")
    return (
        float(forget_quality)
        * (float(retain_acc_unlearned) / float(retain_acc_retrained))
        * (float(test_acc_unlearned) / float(test_acc_retrained))
    )


@dataclass(frozen=True)
class ExampleDetails:
    """Per-example figures a report needs; every field is an ``(E,)`` array.

    ``family`` is ``"single"`` (``conf >= threshold``), ``"double"`` (``left <= conf <=
    right``), ``"collapsed"`` (capped without attack) or ``"none"`` (no rule survived, 0).
    ``fpr``/``fnr`` are those of the best rule (NaN without one); ``threshold_left`` is NaN
    for single-threshold rules. ``bucket`` is -1 beyond the last bucket.
    """

    epsilon: np.ndarray
    bucket: np.ndarray
    points: np.ndarray
    family: np.ndarray
    threshold_left: np.ndarray
    threshold_right: np.ndarray
    fpr: np.ndarray
    fnr: np.ndarray
    median_unlearned: np.ndarray
    median_retrained: np.ndarray

    def as_columns(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def example_details(unlearned, retrained, *, delta: float = DELTA) -> ExampleDetails:
    """Epsilon, bucket, points, the best rule (family, thresholds, FPR, FNR) and medians.

    Args and epsilons as :func:`per_example_epsilons`; the best rule is the first maximum
    in the reference's order (interval rules before single thresholds).
    """
    u, r = _check_confidences(unlearned, retrained)
    table = _epsilon_table(u.shape[0], float(delta))
    n_examples = u.shape[1]
    eps = np.empty(n_examples)
    family = np.empty(n_examples, dtype=object)
    left, right = np.full(n_examples, np.nan), np.full(n_examples, np.nan)
    fpr, fnr = np.full(n_examples, np.nan), np.full(n_examples, np.nan)
    for i in range(n_examples):
        eps[i], best = _epsilon_of_example(u[:, i], r[:, i], table, want_rule=True)
        family[i] = best.family
        fpr[i], fnr[i] = best.fpr, best.fnr
        if best.family == FAMILY_DOUBLE:
            left[i], right[i] = best.thresholds
        elif best.family == FAMILY_SINGLE:
            right[i] = best.thresholds[0]
    bucket, points = epsilon_points(eps, u.shape[0])
    return ExampleDetails(
        epsilon=eps,
        bucket=bucket,
        points=points,
        family=family.astype(str),
        threshold_left=left,
        threshold_right=right,
        fpr=fpr,
        fnr=fnr,
        median_unlearned=np.median(u, axis=0),
        median_retrained=np.median(r, axis=0),
    )
