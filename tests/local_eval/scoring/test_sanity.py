import math

import numpy as np

from local_eval.scoring.sanity import loss_attack_accuracy


def test_same_distribution_is_near_chance():
    rng = np.random.default_rng(0)
    acc = loss_attack_accuracy(rng.exponential(size=400), rng.exponential(size=600))
    assert 0.4 < acc < 0.6


def test_separated_losses_are_found():
    rng = np.random.default_rng(0)
    acc = loss_attack_accuracy(rng.uniform(0, 0.1, 200), rng.uniform(1, 2, 200))
    assert acc > 0.95


def test_too_few_examples_give_nan():
    assert math.isnan(loss_attack_accuracy(np.ones(5), np.ones(50)))
