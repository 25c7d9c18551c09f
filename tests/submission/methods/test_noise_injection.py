"""``noise_injection``: its published defaults and its signature step."""

import copy
import warnings

import pytest
import torch
from torchvision.models import resnet18

from submission import METHODS, seed_everything
from submission.methods.noise_injection import (
    NoiseInjectionBudgetWarning,
    draw,
    noise_targets,
    parameter_pools,
)
from tests.submission import conftest as kit

noise_injection = METHODS["noise_injection"]


def test_defaults_are_the_teams_recipe():
    # xcadet/deepunlearn munl/unlearning/kgltop7.py: 9 epochs, the last 4 on everything, 1
    # reset epoch (l. 12-14); 9 tensors per epoch (l. 91); noise ratio 0.7, std 0.04 (l. 33-34);
    # lr 2e-4 (l. 23); the fine epochs' rates (l. 15-22 read at l. 113-117); momentum 0.9 and
    # weight decay 5e-4 for both (l. 24-25, 30-31)
    defaults = kit.keyword_defaults(noise_injection)
    assert defaults == {
        "budget_s": None,
        "epochs": 9,
        "fine_epochs": 4,
        "reset_epochs": 1,
        "layer_select": 9,
        "noise_ratio": 0.7,
        "noise_std": 0.04,
        "lr": 2e-4,
        "fine_lrs": (2e-4, 2e-4, 2e-4, 1e-3),
        "momentum": 0.9,
        "weight_decay": 5e-4,
    }
    assert int(defaults["noise_ratio"] * defaults["layer_select"]) == 6  # noised per epoch


def test_pools_on_resnet18_are_the_teams_name_rule():
    net = resnet18(num_classes=kit.CLASSES)
    names = {id(p): n for n, p in net.named_parameters()}
    pool, always = parameter_pools(net)
    # the team's rule (kgltop7.py l. 169): a name with "bn" is trained every epoch; the
    # shortcut BatchNorms ("downsample.1") have none, so they are drawn like the convs
    assert {names[id(p)] for p in always} == {n for n in names.values() if "bn" in n}
    assert {names[id(p)] for p in pool} == {n for n in names.values() if "bn" not in n}
    assert (len(pool), len(always)) == (28, 34)  # 20 conv weights + 6 shortcut BN + fc's 2


def test_noise_goes_to_six_of_the_nine_drawn_never_to_a_tensor_trained_before():
    seed_everything(0)
    chosen = draw(28, 9)
    assert len(set(chosen)) == 9 and set(chosen) <= set(range(28))
    fresh = noise_targets(chosen, 6, already=set())
    assert len(set(fresh)) == 6 and set(fresh) <= set(chosen)
    seen = set(chosen[:5])
    for _ in range(20):
        targets = noise_targets(chosen, 6, already=seen)
        # 6 of the 9 drawn, of which at most 5 were seen: 1 to 4 fresh ones get the noise
        assert set(targets) <= set(chosen) - seen and 1 <= len(targets) <= 4


def test_noise_is_absolute_and_batchnorm_trains_every_epoch_on_resnet18():
    torch.manual_seed(0)
    net = resnet18(num_classes=kit.CLASSES).eval()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    retain = kit.make_loader(
        *kit.make_data(4, seed=1, shape=(3, 32, 32)), form="tuple", batch_size=4
    )
    seed_everything(1)
    with kit.recorded_steps() as steps:
        # rate 0: only the classifier's reset and the noise move a weight
        noise_injection(
            net, retain, kit.Untouchable(), kit.Untouchable(), lr=0.0, fine_lrs=(0.0,) * 4
        )
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert {"fc.weight", "fc.bias"} <= changed
    noised = changed - {"fc.weight", "fc.bias"}
    assert 1 <= len(noised) <= 4 * 6  # up to 6 in each of the 4 noisy epochs
    assert not any("bn" in n for n in noised)  # the always-trained tensors get no noise
    large = [n for n in noised if before[n].numel() >= 4096]
    assert large
    for n in large:  # each noised once: w + 0.04 * N(0, 1), whatever the weight's own scale
        diff = net.get_parameter(n).detach() - before[n]
        assert diff.std().item() == pytest.approx(0.04, rel=0.05)
        assert abs(diff.mean().item()) < 0.004
    # a fresh SGD each epoch: 9 drawn tensors + the 34 BatchNorm ones for 5 epochs, then all 62
    assert len(steps) == 9 and len({s[0] for s in steps}) == 9
    assert [s[4] for s in steps] == [9 + 34] * 5 + [62] * 4
    assert {s[2:4] for s in steps} == {(0.9, 5e-4)}


def test_rates_per_epoch_with_a_fresh_sgd_each_epoch(tiny_setup):
    original, _, make = tiny_setup
    retain, _, _ = make("dict")  # 20 batches
    net = copy.deepcopy(original)
    seed_everything(0)
    with kit.recorded_steps() as steps, warnings.catch_warnings():
        warnings.simplefilter("error", NoiseInjectionBudgetWarning)
        noise_injection(net, retain, kit.Untouchable(), kit.Untouchable())  # neither set is read
    assert len(steps) == 9 * 20
    epochs = [steps[20 * e : 20 * (e + 1)] for e in range(9)]
    assert all(all(s[0] is epoch[0][0] for s in epoch) for epoch in epochs)
    assert len({id(epoch[0][0]) for epoch in epochs}) == 9
    rates = [2e-4] * 5 + [2e-4, 2e-4, 2e-4, 1e-3]  # constant within an epoch: no schedule
    assert [{s[1] for s in epoch} for epoch in epochs] == [{r} for r in rates]


def test_restores_frozen_flags_and_never_touches_a_frozen_tensor(tiny_setup):
    original, _, make = tiny_setup
    net = copy.deepcopy(original)
    net.body[0].bias.requires_grad_(False)
    net.head.bias.requires_grad_(False)  # the classifier's reset keeps a frozen tensor too
    seed_everything(0)
    noise_injection(net, *make("tuple"), epochs=3, fine_epochs=1)
    flags = {name: p.requires_grad for name, p in net.named_parameters()}
    assert flags.pop("body.0.bias") is False and flags.pop("head.bias") is False
    assert all(flags.values())
    assert torch.equal(net.body[0].bias, original.body[0].bias)
    assert torch.equal(net.head.bias, original.head.bias)
    assert not torch.equal(net.head.weight, original.head.weight)


def test_too_few_fine_rates_is_a_clear_error(tiny_setup):
    original, _, make = tiny_setup
    with pytest.raises(ValueError, match="fine_lrs gives 2 rates for 4 fine epochs"):
        noise_injection(copy.deepcopy(original), *make("dict"), fine_lrs=(1e-3, 1e-3))


def test_a_budget_that_cuts_the_recovery_warns_and_still_trains():
    retain = kit.SlowLoader(
        kit.make_loader(*kit.make_data(80, seed=1), form="dict", batch_size=4), 0.05
    )
    net = kit.make_net()
    before = copy.deepcopy(net.state_dict())
    seed_everything(0)
    with (
        kit.recorded_steps() as steps,
        pytest.warns(NoiseInjectionBudgetWarning, match="of the 180"),
    ):
        noise_injection(net, retain, kit.Untouchable(), kit.Untouchable(), budget_s=0.4)
    assert 1 <= len(steps) < 180
    assert not torch.equal(net.state_dict()["body.3.weight"], before["body.3.weight"])
