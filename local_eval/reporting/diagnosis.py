"""Where a method's runs differ from the references, per forget example: pure numpy.

The score attacks each forget example with the N runs' logit-scaled confidences against the N
references'. Two things let the attack tell them apart: the runs' *mean* confidence on the
example lies off the references' mean, or their *spread* differs (too tight a cluster, or too
wide). :func:`diagnose` measures both, and splits the per-example mean error into what it
resembles:

- **memorisation**: how far models trained like the original (the floor's originals, other
  seeds) stand off the references on each example, ``mean(floor) - mean(references)``. Every
  such model saw the forget set; the references did not. A run that keeps a share of it has
  not forgotten that share;
- **the original's own deviation**: how far the one original the runs start from stands off
  the other originals, ``original - mean(floor)``: its seed's quirks, which no reference has
  (each has its own seed's). Runs that all start from one original and change it only in part
  keep a share of these, and being shared by every run, they move the runs' mean.

The shares are least-squares coefficients of the per-example error on the two (centred),
fitted over the forget examples: 1 keeps all of it, 0 none. ``unexplained`` is what the fit
leaves. The groups' means are estimates: the references' mean enters both the error and the
memorisation pattern, so with few models an independent group shows a share above 0 (about the
references' sampling variance over the pattern's). The same figures for the ceiling (a second
set of retrained models) show what sampling alone gives at this N, so read the runs' beside
them. Descriptive figures, not the score: they say why a score is low, not how the competition
ranks.
"""

from __future__ import annotations

import numpy as np

__all__ = ["diagnose"]


def diagnose(
    runs: np.ndarray,
    references: np.ndarray,
    originals: np.ndarray,
    *,
    original: np.ndarray | None = None,
) -> dict:
    """Per-example mean and spread of ``runs`` against ``references``, and the split of the
    mean error (see the module docstring).

    Args:
        runs: ``(N, E)`` logit-scaled confidences of the models judged.
        references: ``(N, E)`` those of the retrained references.
        originals: ``(M, E)`` those of models trained like the original (other seeds), not the
            runs' own original; ``M >= 1``.
        original: ``(E,)`` the runs' original's, if known; without it the original's own
            deviation is not split off (its share is ``None``).

    Returns a dict of floats (``None`` where not computed): ``shift`` (mean over examples of
    the runs' mean minus the references'), ``mean_error`` (mean of its absolute value),
    ``spread_ratio`` (median over examples of the runs' standard deviation over the
    references'; examples where the references agree exactly are left out), ``memorisation``
    and ``own_deviation`` (mean absolute size of each pattern), ``kept_memorisation`` and
    ``kept_own`` (the shares), ``unexplained`` (mean absolute residual of the fit).
    Non-finite confidences are refused (``ValueError``), as the metric refuses them.
    """
    runs, references, originals = (
        np.asarray(a, dtype=np.float64) for a in (runs, references, originals)
    )
    if runs.ndim != 2 or references.ndim != 2 or originals.ndim != 2:
        raise ValueError("runs, references and originals must be (models, examples) arrays")
    examples = runs.shape[1]
    if references.shape[1] != examples or originals.shape[1] != examples:
        raise ValueError(
            f"every group must hold the same forget examples: {runs.shape[1]}, "
            f"{references.shape[1]} and {originals.shape[1]} columns"
        )
    if min(len(runs), len(references), len(originals)) < 1:
        raise ValueError("every group needs at least one model")
    if original is not None:
        original = np.asarray(original, dtype=np.float64)
        if original.shape != (examples,):
            raise ValueError(f"original must be ({examples},), one confidence per example")
    # as the metric does (it refuses such logits before any report is built)
    groups = [runs, references, originals] + ([original[None]] if original is not None else [])
    finite = np.logical_and.reduce([np.isfinite(g).all(0) for g in groups])
    if not finite.all():
        raise ValueError(
            f"confidences hold NaN or inf at example {int(np.argmin(finite))}: "
            "check the models' logits"
        )
    reference_mean = references.mean(0)
    error = runs.mean(0) - reference_mean
    reference_std = references.std(0)
    varied = reference_std > 0
    spread = float(np.median(runs.std(0)[varied] / reference_std[varied])) if varied.any() else None
    originals_mean = originals.mean(0)
    patterns = {"memorisation": originals_mean - reference_mean}
    if original is not None:
        patterns["own_deviation"] = original - originals_mean
    design = np.stack([p - p.mean() for p in patterns.values()], axis=1)
    centred = error - error.mean()
    shares, *_ = np.linalg.lstsq(design, centred, rcond=None)
    residual = centred - design @ shares
    kept = dict(zip(patterns, (float(s) for s in shares), strict=True))
    return {
        "shift": float(error.mean()),
        "mean_error": float(np.abs(error).mean()),
        "spread_ratio": spread,
        "memorisation": float(np.abs(patterns["memorisation"]).mean()),
        "own_deviation": (
            float(np.abs(patterns["own_deviation"]).mean()) if original is not None else None
        ),
        "kept_memorisation": kept["memorisation"],
        "kept_own": kept.get("own_deviation"),
        "unexplained": float(np.abs(residual).mean()),
    }
