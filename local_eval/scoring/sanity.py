"""The starting kit's population-level sanity check (NOT the competition metric).

A logistic regression tries to tell forget examples from test examples by their loss under
one model; its 10-fold cross-validated accuracy is about 0.5 when the model treats the
forget set like unseen data. It looks at the whole population with one model, so it cannot
see what the competition's per-example, many-model attack sees: a low value here is
necessary, not sufficient.
"""

from __future__ import annotations

import numpy as np

__all__ = ["loss_attack_accuracy"]

N_SPLITS = 10


def loss_attack_accuracy(
    forget_losses: np.ndarray, test_losses: np.ndarray, *, seed: int = 0
) -> float:
    """Mean 10-fold CV accuracy of a logistic regression on per-example losses.

    ``forget_losses`` (E,) and ``test_losses`` (T,) of one model; the larger set is
    subsampled (with ``seed``) to the size of the smaller, as the starting kit does, so
    chance is 0.5. NaN when either set has fewer than 10 examples.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    size = min(len(forget_losses), len(test_losses))
    if size < N_SPLITS:
        return float("nan")
    rng = np.random.default_rng(seed)
    forget = rng.choice(np.asarray(forget_losses, dtype=np.float64), size, replace=False)
    test = rng.choice(np.asarray(test_losses, dtype=np.float64), size, replace=False)
    x = np.concatenate([forget, test])[:, None]
    members = np.concatenate([np.ones(size), np.zeros(size)])
    folds = StratifiedKFold(n_splits=N_SPLITS, shuffle=True, random_state=seed)
    scores = cross_val_score(LogisticRegression(), x, members, cv=folds, scoring="accuracy")
    return float(np.mean(scores))
