"""A competition-shaped setting that runs on 2 CPU cores, and its statistics.

Chosen from the competition's documented facts (``../shared/spec/kaggle.md``) before any
unlearning method was run on it:

- the forget set: 15 whole persons, about 2% of the training data, almost all of class 0
  (``--forget persons``: pseudo persons of the bundled digits sized so that 15 of them are
  2% of training; 13 of class 0, 2 of class 1);
- the model: ResNet-18's layout, narrow enough for a CPU (``--arch resnet18_narrow``: the
  stem conv, BatchNorm, the 1x1 downsample shortcuts and the classifier that the entries
  choose among);
- the recipe: the organisers' retraining (``--recipe organisers_face``: Adam lr 1e-4, weight
  decay 5e-3, class-weighted cross-entropy, cosine, 30 epochs, the best validation
  checkpoint from epoch 20 on), so the 20% cut-off allows about 6 epochs of relearning, as it
  did there.

The bundled digits (8x8, 1,797 images) are the data because a 30-epoch ResNet-shaped
retraining then takes seconds on a CPU, so a board of N = 32 fits a session; the MNIST
sample would take minutes per model. :func:`setting_statistics` measures what the setting
is beside what the competition was; ``python -m bench.setting`` prints both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

__all__ = ["COMPETITION", "SETTING", "SETTINGS", "setting_statistics"]

# the options of python -m local_eval that give the setting (``--setting competition`` sets
# them all). Its references are trained by the batched trainer: the same recipe, more models
# per minute on 2 cores (``python -m bench --only batched_setting``; docs/benchmarks.md); the
# original, whose seconds set the budget, is trained alone by the sequential one either way.
SETTING = {
    "dataset": "digits",
    "forget": "persons",
    "arch": "resnet18_narrow",
    "recipe": "organisers_face",
    "trainer": "batched",
}
# the named settings of ``--setting``
SETTINGS = {"competition": SETTING}

# The competition's figures (kaggle.md): forget fraction, persons, class 0's share of the
# forget examples ("the vast majority"), the original's train and test accuracy, the recipe's
# epochs and the relearning epochs its 20% cut-off allowed.
COMPETITION = {
    "forget_fraction": 0.02,
    "forget_groups": 15,
    "forget_class0_share": "the vast majority (classes 0 and 1 only)",
    "original_train_accuracy": 0.9898,
    "original_test_accuracy": 0.9643,
    "recipe_epochs": 30,
    "relearning_epochs_at_cutoff": 6.0,
}


@dataclass(frozen=True)
class SettingStatistics:
    forget_fraction: float  # of the training data (retain + forget)
    forget_groups: int  # whole persons in the forget set
    forget_classes: dict[int, int]  # forget examples per class
    persons_split: int  # persons with images on both sides of the cut (0: whole persons)
    original_train_accuracy: float
    original_test_accuracy: float
    recipe_epochs: int
    retraining_s: float  # the original's training: the "one retraining" of the auto budget
    epoch_s: float  # one epoch of retain training at the recipe's batch size
    relearning_epochs_at_cutoff: float  # epochs of retain training 20% of it affords


def forget_statistics(setup) -> dict:
    """The forget set's shape: fraction, whole persons, class mix (no training)."""
    retain, forget = setup.retain.column("person_id"), setup.forget.column("person_id")
    labels, counts = np.unique(setup.forget.labels.numpy(), return_counts=True)
    return {
        "forget_fraction": len(setup.forget) / (len(setup.retain) + len(setup.forget)),
        "forget_groups": len(np.unique(forget)),
        "forget_classes": {int(k): int(v) for k, v in zip(labels, counts, strict=True)},
        "persons_split": len(set(retain.tolist()) & set(forget.tolist())),
    }


def setting_statistics(*, seed: int = 0, device: str = "cpu") -> SettingStatistics:
    """Cut the setting's data, train its original, and measure it (seconds on this machine)."""
    from local_eval.data.setup import load_setup
    from local_eval.training.signals import accuracy, model_logits
    from local_eval.training.train import CUTOFF, get_recipe, train_new_model

    setup = load_setup(SETTING["dataset"], forget=SETTING["forget"], seed=seed)
    recipe = get_recipe(SETTING["recipe"])

    def train(split, val, recipe, seed):
        return train_new_model(SETTING["arch"], split, val, recipe,
                               num_classes=setup.num_classes, device=device, seed=seed)  # fmt: skip

    original = train(setup.train, setup.val, recipe, seed)
    start = time.perf_counter()
    train(setup.retain, None, get_recipe(SETTING["recipe"], epochs=1), seed + 1)
    epoch_s = time.perf_counter() - start

    def acc(split) -> float:
        return float(accuracy(model_logits(original.model, split, device=device),
                              split.labels.numpy()))  # fmt: skip

    return SettingStatistics(
        **forget_statistics(setup),
        original_train_accuracy=acc(setup.train),
        original_test_accuracy=acc(setup.test),
        recipe_epochs=recipe.epochs,
        retraining_s=original.seconds,
        epoch_s=epoch_s,
        relearning_epochs_at_cutoff=CUTOFF * original.seconds / epoch_s,
    )
