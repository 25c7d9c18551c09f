"""``conv_transpose``: its published defaults and its signature step."""

import copy
import warnings

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from submission import METHODS, seed_everything
from submission.methods.conv_transpose import ConvTransposeBudgetWarning, transpose_kernels
from tests.submission import conftest as kit

conv_transpose = METHODS["conv_transpose"]


def test_defaults_are_the_teams_recipe():
    # xcadet/deepunlearn munl/unlearning/kgltop5.py l. 46-49: 3 epochs, SGD lr 1e-3, mom 0.9,
    # weight decay 5e-4
    defaults = kit.keyword_defaults(conv_transpose)
    assert defaults == {
        "budget_s": None,
        "epochs": 3,
        "lr": 1e-3,
        "momentum": 0.9,
        "weight_decay": 5e-4,
    }


def test_transpose_kernels_swaps_spatial_axes_of_square_kernels_only():
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Conv2d(3, 3, (1, 3)), nn.Conv2d(3, 3, 1))
    before = [m.weight.detach().clone() for m in net]
    assert transpose_kernels(net) == 1
    torch.testing.assert_close(net[0].weight, before[0].transpose(2, 3))
    assert torch.equal(net[1].weight, before[1]) and torch.equal(net[2].weight, before[2])


def test_every_resnet_kernel_is_exactly_transposed_before_training():
    torch.manual_seed(0)
    net = resnet18(num_classes=kit.CLASSES).eval()
    before = copy.deepcopy(net.state_dict())
    convs = {name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    # epochs=0: the transposition alone; no set is read
    out = conv_transpose(net, kit.Untouchable(), kit.Untouchable(), kit.Untouchable(), epochs=0)
    assert out is net and not net.training
    after = net.state_dict()
    for key, value in after.items():
        if key.removesuffix(".weight") in convs:
            # the team's operation on every Conv2d (1x1 shortcuts: their own transpose)
            assert torch.equal(value, before[key].swapaxes(2, 3)), key
        else:
            assert torch.equal(value, before[key]), key  # BatchNorm, fc: untouched
    square = [k for k in convs if net.get_submodule(k).kernel_size[0] > 1]
    assert len(square) == 17  # the 7x7 stem and the 16 3x3 convs all changed
    assert all(not torch.equal(after[f"{k}.weight"], before[f"{k}.weight"]) for k in square)


def test_three_epochs_on_retain_at_the_per_epoch_cosine_rates(tiny_setup):
    original, _, make = tiny_setup
    retain, _, _ = make("dict")  # 20 batches
    net = copy.deepcopy(original)
    seed_everything(0)
    with kit.recorded_steps() as steps, warnings.catch_warnings():
        warnings.simplefilter("error", ConvTransposeBudgetWarning)
        conv_transpose(
            net, retain, kit.Untouchable(), kit.Untouchable()
        )  # forget and val never read
    assert len(steps) == 3 * 20
    assert len({s[0] for s in steps}) == 1  # one optimizer throughout
    assert {(s[2], s[3]) for s in steps} == {(0.9, 5e-4)}
    # CosineAnnealingLR(T_max=3) stepped per epoch: 1e-3 * (1 + cos(pi * e / 3)) / 2
    rates = [s[1] for s in steps]
    for epoch, lr in enumerate([1e-3, 7.5e-4, 2.5e-4]):
        assert rates[20 * epoch : 20 * (epoch + 1)] == pytest.approx([lr] * 20, rel=1e-12)


def test_a_budget_that_cuts_the_recovery_warns_and_still_trains():
    retain = kit.SlowLoader(
        kit.make_loader(*kit.make_data(80, seed=1), form="dict", batch_size=4), 0.05
    )
    net = kit.make_net()
    before = copy.deepcopy(net.state_dict())
    seed_everything(0)
    with kit.recorded_steps() as steps, pytest.warns(ConvTransposeBudgetWarning, match="of the 60"):
        conv_transpose(net, retain, kit.Untouchable(), kit.Untouchable(), budget_s=0.4)
    assert 1 <= len(steps) < 60
    assert not torch.equal(net.state_dict()["head.weight"], before["head.weight"])
