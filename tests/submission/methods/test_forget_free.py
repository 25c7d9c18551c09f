"""``forget_free``: its published defaults and its signature step."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from submission import METHODS, seed_everything
from submission.helpers import projection_shortcuts, reinitialise_tensors
from submission.methods.forget_free import (
    ForgetFreeBudgetWarning,
    cosine_epoch_lrs,
    draw_layers,
    preserving_loss,
    selection_pool,
)
from tests.submission import conftest as kit

forget_free = METHODS["forget_free"]


def test_defaults_are_the_teams_recipe():
    # the team's writeup (kaggle.com/c/neurips-2023-machine-unlearning/discussion/458715,
    # "Experimental Settings"): 3 cycles of [1, 2, 2] epochs, 6 layers per cycle, image noise
    # sigma 0.01, cosine init_lr 0.001, T_max 2. Momentum 0.9 and weight decay 5e-4 are the
    # competition template's SGD: the team does not give its optimiser.
    defaults = kit.keyword_defaults(forget_free)
    assert defaults == {
        "budget_s": None,
        "cycle_epochs": (1, 2, 2),
        "layers_per_cycle": 6,
        "image_noise_std": 0.01,
        "lr": 1e-3,
        "t_max": 2,
        "epoch_lrs": None,
        "momentum": 0.9,
        "weight_decay": 5e-4,
    }


def test_epoch_rates_are_torchs_cosine_annealing_stepped_per_epoch():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2)
    torch_rates = []
    for _ in range(5):
        torch_rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    rates = cosine_epoch_lrs(5, 1e-3, 2)
    assert rates == pytest.approx(torch_rates, abs=1e-15)
    assert rates == pytest.approx([1e-3, 5e-4, 0.0, 5e-4, 1e-3], abs=1e-15)  # periodic past T_max


def test_the_pool_excludes_the_classifier_and_the_projection_shortcuts():
    net = resnet18(num_classes=kit.CLASSES)
    names = {id(p): n for n, p in net.named_parameters()}
    pool = {names[id(getattr(module, name))] for module, name in selection_pool(net)}
    # by name on torchvision's ResNet-18: everything but fc.* and the three downsample pairs
    assert pool == {n for n in names.values() if not n.startswith("fc.") and "downsample" not in n}
    assert len(pool) == 51
    blocks = (net.layer2[0], net.layer3[0], net.layer4[0])
    expected = [block.downsample[i] for block in blocks for i in (0, 1)]  # conv 1x1, BatchNorm
    assert all(a is b for a, b in zip(projection_shortcuts(net), expected, strict=True))


def test_draws_are_with_replacement():
    seed_everything(0)
    assert len(draw_layers(51, 6)) == 6
    many = draw_layers(3, 60)
    assert len(many) == 60 and set(many) == {0, 1, 2}  # repeats: drawn with replacement


def test_each_cycle_reinitialises_six_drawn_tensors_never_the_classifier_or_shortcuts():
    torch.manual_seed(0)
    net = resnet18(num_classes=kit.CLASSES).eval()
    with torch.no_grad():  # BatchNorm tensors away from their initial 1 and 0, so redraws show
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    expected = copy.deepcopy(net)
    names = {id(p): n for n, p in expected.named_parameters()}
    pool = selection_pool(expected)
    seed_everything(2)
    draws = []
    for _ in range(3):  # 6 draws with replacement, then their redraw, once per cycle
        draws.append(draw_layers(len(pool), 6))
        reinitialise_tensors([pool[i] for i in draws[-1]])
    seed_everything(2)
    # three cycles without training: the re-initialisation alone; no set is read
    forget_free(
        net, kit.Untouchable(), kit.Untouchable(), kit.Untouchable(), cycle_epochs=(0, 0, 0)
    )
    for p, q in zip(net.parameters(), expected.parameters(), strict=True):
        assert torch.equal(p, q)
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {names[id(getattr(*pool[i]))] for cycle in draws for i in cycle}
    assert 6 <= len(changed) <= 18  # 3 x 6 draws; a tensor drawn twice counts once
    assert not any(n.startswith("fc.") or "downsample" in n for n in changed)


def test_the_loss_is_mse_to_the_original_on_the_same_noisy_images():
    teacher, student = kit.make_net(0), kit.make_net(1)
    x = kit.make_data(8, seed=4)[0]
    with torch.no_grad():
        # both models see one noisy copy: a model matches itself exactly, whatever the noise
        assert preserving_loss(teacher, teacher, x, 0.5).item() == 0.0
        exact = F.mse_loss(student(x), teacher(x)).item()
        assert preserving_loss(student, teacher, x, 0.0).item() == pytest.approx(exact, rel=1e-6)
        seed_everything(3)
        loss = preserving_loss(student, teacher, x, 0.5).item()
        seed_everything(3)
        noisy = x + 0.5 * torch.randn_like(x)
        assert loss == pytest.approx(F.mse_loss(student(noisy), teacher(noisy)).item(), rel=1e-6)


@pytest.mark.parametrize(
    ("hyperparameters", "rates"),
    [
        ({}, [1e-3, 5e-4, 0.0, 5e-4, 1e-3]),  # the first algorithm
        (  # the second algorithm: 4 cycles of [2, 1, 1, 1] epochs at the given rates
            {"cycle_epochs": (2, 1, 1, 1), "epoch_lrs": (5e-4, 1e-3, 1e-3, 1e-3, 1e-3)},
            [5e-4, 1e-3, 1e-3, 1e-3, 1e-3],
        ),
    ],
)
def test_one_sgd_over_the_five_epochs_at_the_published_rates(tiny_setup, hyperparameters, rates):
    original, _, make = tiny_setup
    retain, _, _ = make("dict")  # 20 batches
    net = copy.deepcopy(original)
    seed_everything(0)
    with kit.recorded_steps() as steps, warnings.catch_warnings():
        warnings.simplefilter("error", ForgetFreeBudgetWarning)
        # only the retain set is read (writeup, "Conclusion")
        forget_free(net, retain, kit.Untouchable(), kit.Untouchable(), **hyperparameters)
    assert len(steps) == 5 * 20
    assert all(s[0] is steps[0][0] for s in steps)  # one optimizer for the whole call
    assert {s[2:4] for s in steps} == {(0.9, 5e-4)}
    for epoch, rate in enumerate(rates):
        assert [s[1] for s in steps[20 * epoch : 20 * (epoch + 1)]] == pytest.approx(
            [rate] * 20, abs=1e-15
        )
    pairs = zip(net.parameters(), original.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)


def test_a_budget_that_cuts_the_recovery_warns_and_still_trains():
    retain = kit.SlowLoader(
        kit.make_loader(*kit.make_data(80, seed=1), form="dict", batch_size=4), 0.05
    )
    net = kit.make_net()
    seed_everything(0)
    with kit.recorded_steps() as steps, pytest.warns(ForgetFreeBudgetWarning, match="of the 100"):
        forget_free(net, retain, kit.Untouchable(), kit.Untouchable(), budget_s=0.4)
    assert 1 <= len(steps) < 100
