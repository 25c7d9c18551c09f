"""The organisers' cut-off, as the runner and the profiler measure it: an unlearning slower
than :data:`~local_eval.training.train.CUTOFF` (20%) of one retraining is not scored, so a job's
share of its hours should never buy a longer run.

"One retraining" is the evaluator's recipe for the data and architecture, ``recipe.epochs``
epochs of its own trainer (validation passes included), timed here one epoch at a time, so the
runner's cap, the profiler's ratio and the evaluator's report mean the same thing.
"""

from __future__ import annotations

import dataclasses

import torch

from local_eval.training.train import CUTOFF, Recipe, train_new_model
from submission.loop import warm_up

__all__ = ["CUTOFF_MARGIN", "cutoff_cap_s", "time_retrain_epoch"]

# A run is granted at most this share of the cut-off: methods overshoot what they are granted
# a little (the last step, the copy back), the retraining is estimated from one epoch, and a
# run over the cut-off scores nothing. (The evaluator's own budget is the whole cut-off: it
# knows the original's training time and only reports the runs over it.)
CUTOFF_MARGIN = 0.9


def time_retrain_epoch(
    setup, arch: str, recipe: Recipe, device: torch.device, seed: int, *, repeats: int = 2
) -> dict:
    """One epoch of ``recipe`` on retain from a fresh model, by the evaluator's own trainer
    (``local_eval.training.train``), so that "one retraining" means here what it means in
    the evaluator's report: ``recipe.epochs`` such epochs, validation passes included. The
    fastest of ``repeats`` epochs, after torch's one-off costs are paid (``warm_up``): the
    first epoch in a process measured 1.79 s where the next ones took 0.09-0.42 s (digits,
    small CNN), and a retraining is timed warm."""
    warm_up(device)
    one_epoch = dataclasses.replace(recipe, epochs=1)
    seconds = [
        train_new_model(
            arch, setup.retain, setup.val, one_epoch, num_classes=setup.num_classes,
            device=device, seed=seed,
        ).seconds
        for _ in range(repeats)
    ]  # fmt: skip
    return {"total_s": min(seconds), "recipe": recipe.name}


def cutoff_cap_s(
    epoch_s: float, epochs: int, *, share: float = CUTOFF, margin: float = CUTOFF_MARGIN
) -> float:
    """The most seconds one run may be granted: ``margin`` of ``share`` of ``epochs`` epochs
    of ``epoch_s`` seconds each."""
    if epoch_s <= 0 or epochs < 1 or share <= 0:
        raise ValueError(f"need epoch_s > 0, epochs >= 1, share > 0: {epoch_s}, {epochs}, {share}")
    return margin * share * epochs * epoch_s
