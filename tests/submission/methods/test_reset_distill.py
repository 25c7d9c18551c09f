"""``reset_distill``: its published defaults and its signature step."""

import copy
import math
import warnings

import pytest
import torch
from torchvision.models import resnet18

from submission import METHODS, seed_everything
from submission.methods.reset_distill import (
    ResetDistillBudgetWarning,
    distill_kl,
    retain_loss,
    soft_cross_entropy,
)
from tests.submission import conftest as kit

reset_distill = METHODS["reset_distill"]


def test_defaults_are_the_teams_recipe():
    # xcadet/deepunlearn munl/unlearning/kgltop6.py l. 55-65: warm-up 3 epochs, SGD 9e-4,
    # mom 0.9, wd 5e-4; retain 3 epochs, SGD 1e-3, mom 0.9, wd 5e-4; temperature 5
    defaults = kit.keyword_defaults(reset_distill)
    assert defaults == {
        "budget_s": None,
        "distill_epochs": 3,
        "retain_epochs": 3,
        "temperature": 5.0,
        "distill_lr": 9e-4,
        "distill_momentum": 0.9,
        "distill_weight_decay": 5e-4,
        "retain_lr": 1e-3,
        "retain_momentum": 0.9,
        "retain_weight_decay": 5e-4,
    }


def test_losses_have_the_teams_terms_and_no_temperature_squared():
    t = 5.0
    teacher = torch.tensor([[t * math.log(3.0), 0.0]])  # softmax(teacher / T) = (3/4, 1/4)
    student = torch.tensor([[t * math.log(2.0), 0.0]])  # softmax(student / T) = (2/3, 1/3)
    labels = torch.tensor([0])
    kl = 0.75 * math.log(0.75 / (2 / 3)) + 0.25 * math.log(0.25 / (1 / 3))
    soft_ce = -(0.75 * math.log(2 / 3) + 0.25 * math.log(1 / 3))
    ce = math.log(1.0 + 2.0**-t)  # the labels' cross-entropy at T = 1
    assert distill_kl(student, teacher, t).item() == pytest.approx(kl, rel=1e-5)
    assert soft_cross_entropy(student, teacher, t).item() == pytest.approx(soft_ce, rel=1e-6)
    total = retain_loss(student, teacher, labels, t).item()
    assert total == pytest.approx(soft_ce + ce + kl, rel=1e-6)  # 0.6259...


def test_resets_exactly_the_stem_conv_and_the_classifier():
    torch.manual_seed(0)
    net = resnet18(num_classes=kit.CLASSES).eval()
    before = copy.deepcopy(net.state_dict())
    expected = [copy.deepcopy(net.conv1), copy.deepcopy(net.fc)]
    seed_everything(5)
    for layer in expected:  # the same draws, in the same order
        layer.reset_parameters()
    seed_everything(5)
    # no training epochs: the reset alone; no set is read
    reset_distill(
        net,
        kit.Untouchable(),
        kit.Untouchable(),
        kit.Untouchable(),
        distill_epochs=0,
        retain_epochs=0,
    )
    after = net.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"conv1.weight", "fc.weight", "fc.bias"}  # conv1 has no bias
    assert torch.equal(net.conv1.weight, expected[0].weight)
    assert torch.equal(net.fc.weight, expected[1].weight)
    assert torch.equal(net.fc.bias, expected[1].bias)


def test_warm_up_on_val_at_a_constant_rate_then_a_fresh_sgd_on_retain(tiny_setup):
    original, _, make = tiny_setup
    retain, _, val = make("dict")  # 20 retain batches, 4 val batches
    net = copy.deepcopy(original)
    seed_everything(0)
    with kit.recorded_steps() as steps, warnings.catch_warnings():
        warnings.simplefilter("error", ResetDistillBudgetWarning)
        reset_distill(net, retain, kit.Untouchable(), val)  # the forget set is never read
    assert len(steps) == 3 * 4 + 3 * 20
    warm_up, fine_tune = steps[:12], steps[12:]
    assert len({s[0] for s in warm_up}) == 1 and len({s[0] for s in fine_tune}) == 1
    assert warm_up[0][0] != fine_tune[0][0]  # a fresh optimizer for the retain phase
    assert {s[1:4] for s in warm_up} == {(9e-4, 0.9, 5e-4)}  # no schedule
    assert {s[2:4] for s in fine_tune} == {(0.9, 5e-4)}
    # CosineAnnealingLR(T_max=3) stepped per epoch: 1e-3 * (1 + cos(pi * e / 3)) / 2
    rates = [s[1] for s in fine_tune]
    for epoch, lr in enumerate([1e-3, 7.5e-4, 2.5e-4]):
        assert rates[20 * epoch : 20 * (epoch + 1)] == pytest.approx([lr] * 20, rel=1e-12)


def test_a_budget_that_cuts_the_recovery_warns_and_still_trains():
    retain = kit.SlowLoader(
        kit.make_loader(*kit.make_data(80, seed=1), form="dict", batch_size=4), 0.05
    )
    val = kit.SlowLoader(
        kit.make_loader(*kit.make_data(16, seed=3), form="dict", batch_size=4), 0.05
    )
    net = kit.make_net()
    before = copy.deepcopy(net.state_dict())
    seed_everything(0)
    with kit.recorded_steps() as steps, pytest.warns(ResetDistillBudgetWarning, match="of the 72"):
        reset_distill(net, retain, kit.Untouchable(), val, budget_s=0.4)
    assert 1 <= len(steps) < 72
    assert not torch.equal(net.state_dict()["body.3.weight"], before["body.3.weight"])
