"""``masked_small_gradients``: its published defaults and its signature step."""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torchvision.models import resnet18

from submission import METHODS, seed_everything
from submission.loop import warm_up
from submission.methods.masked_small_gradients import (
    MaskedSmallGradientsBudgetWarning,
    epoch_lr_factors,
    first_samples,
    reinit_small_gradients,
    smallest_fraction,
)
from tests.submission import conftest as kit

masked_small_gradients = METHODS["masked_small_gradients"]


def test_defaults_are_the_teams_recipe():
    # xcadet/deepunlearn munl/unlearning/kgltop2.py: re-initialise 30% (l. 197), kept gradients
    # x 0.1 (l. 124), 5 epochs SGD lr 1e-3, wd 5e-4, mom 0.9 (l. 198-201); a conv's bias comes
    # from the freshly built conv (l. 126-143)
    defaults = kit.keyword_defaults(masked_small_gradients)
    assert defaults == {
        "budget_s": None,
        "reinit_fraction": 0.3,
        "kept_grad_scale": 0.1,
        "redraw_conv_bias": True,
        "epochs": 5,
        "lr": 1e-3,
        "momentum": 0.9,
        "weight_decay": 5e-4,
    }


def test_epoch_lr_factors_are_the_teams_linear_annealing():
    # LinearAnnealingLR((epochs + 1) // 2, epochs + 1), kgltop2.py l. 173-192, 247-251
    assert epoch_lr_factors(5) == pytest.approx([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3])
    assert epoch_lr_factors(3) == pytest.approx([0.5, 1.0, 0.5])
    assert epoch_lr_factors(1) == [1.0]
    assert epoch_lr_factors(0) == []


def test_first_samples_cuts_the_last_batch_and_reads_no_further():
    read = []

    def batches():
        for i in range(5):
            read.append(i)
            yield torch.zeros(3, 2), torch.full((3,), i)

    got = list(first_samples(batches(), 7))
    assert [y.tolist() for _, y in got] == [[0, 0, 0], [1, 1, 1], [2]]
    assert read == [0, 1, 2]


def test_reinit_small_gradients_redraws_exactly_the_smallest_30_percent():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 5, 3)  # 180 weights, with a bias
    conv.weight.grad = torch.randn_like(conv.weight)
    before_w, before_b = conv.weight.detach().clone(), conv.bias.detach().clone()
    small = conv.weight.grad.abs().flatten().argsort()[:54]  # round(0.3 * 180)
    mask = reinit_small_gradients(conv, 0.3, 0.1)
    changed = (conv.weight != before_w).flatten()
    assert changed.sum() == 54 and changed[small].all()
    assert sorted(mask.flatten().unique().tolist()) == pytest.approx([0.1, 1.0])
    assert torch.equal(mask.flatten() == 1.0, changed)
    # the bias of a freshly built conv: redrawn from U(+-1 / sqrt(fan_in)), fan_in = 4 * 3 * 3
    assert not torch.equal(conv.bias, before_b)
    assert conv.bias.abs().max() <= 1 / math.sqrt(36)
    # redraw_bias=False keeps it
    conv.bias.data.copy_(before_b)
    reinit_small_gradients(conv, 0.3, 0.1, redraw_bias=False)
    assert torch.equal(conv.bias, before_b)
    assert smallest_fraction(conv.weight.grad, 0.0).sum() == 0


def test_every_resnet_conv_redraws_its_smallest_gradient_30_percent():
    torch.manual_seed(0)
    net = resnet18(num_classes=kit.CLASSES).eval()
    shape = (3, 32, 32)
    x_r, y_r = kit.make_data(12, seed=1, shape=shape)
    x_f, y_f = kit.make_data(4, seed=2, shape=shape, shift=2.0)
    retain = kit.make_loader(x_r, y_r, form="dict", batch_size=3, shuffle=False)
    forget = kit.make_loader(x_f, y_f, form="tuple", batch_size=4, shuffle=False)
    # the team's gradients, as the test computes them: -CE(forget) + CE(the first 4 retain
    # samples, in the loader's batches of 3 and 1), eval mode
    reference = copy.deepcopy(net)
    for x, y, sign in ((x_f, y_f, -1), (x_r[:3], y_r[:3], 1), (x_r[3:4], y_r[3:4], 1)):
        (sign * F.cross_entropy(reference(x), y)).backward()
    before = copy.deepcopy(net.state_dict())
    # epochs=0: the re-initialisation alone
    out = masked_small_gradients(net, retain, forget, kit.Untouchable(), epochs=0)
    assert out is net and not net.training
    convs = [name for name, m in reference.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20  # the stem, 16 3x3 convs and the 3 1x1 shortcut convs
    for name in convs:
        key = f"{name}.weight"
        grad = reference.get_submodule(name).weight.grad
        changed = net.state_dict()[key] != before[key]
        assert changed.sum() == round(0.3 * grad.numel()), name
        assert torch.equal(changed, smallest_fraction(grad, 0.3)), name
    for key, value in net.state_dict().items():
        if key.removesuffix(".weight") not in convs:
            assert torch.equal(value, before[key]), key  # BatchNorm (eval mode), fc: untouched


def test_fine_tuning_scales_only_the_kept_weights_loss_gradients(tiny_setup):
    original, _, make = tiny_setup
    retain, forget, _ = make("tuple")  # 20 retain batches
    net = copy.deepcopy(original)
    conv = net.body[0]
    raw, ratios = [], []
    conv.weight.register_hook(lambda g: raw.append(g.detach().clone()))

    def hook(optimizer, args, kwargs):
        ratios.append(conv.weight.grad / raw[-1])  # the gradient the step sees / the loss's

    seed_everything(0)
    handle = register_optimizer_step_pre_hook(hook)
    try:
        with kit.recorded_steps() as steps, warnings.catch_warnings():
            warnings.simplefilter("error", MaskedSmallGradientsBudgetWarning)
            masked_small_gradients(net, retain, forget, kit.Untouchable())  # val is never read
    finally:
        handle.remove()
    assert len(steps) == 5 * 20 and len({s[0] for s in steps}) == 1  # one SGD throughout
    # LinearAnnealingLR stepped per epoch: lr x [1/3, 2/3, 1, 2/3, 1/3], constant in an epoch
    for epoch, factor in enumerate([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3]):
        rates = [s[1] for s in steps[20 * epoch : 20 * (epoch + 1)]]
        assert rates == pytest.approx([1e-3 * factor] * 20, rel=1e-12)
    assert {s[2:4] for s in steps} == {(0.9, 5e-4)}  # decay in the optimizer, on every weight
    # the mask multiplies the loss gradient by 1 (redrawn, 30%) or 0.1 (kept), every step
    for ratio in ratios:
        finite = ratio[torch.isfinite(ratio)]
        ones = torch.isclose(finite, torch.tensor(1.0))
        assert torch.isclose(finite[~ones], torch.tensor(0.1)).all()
    assert torch.isclose(ratios[0], torch.tensor(1.0)).sum() == round(0.3 * conv.weight.numel())


def test_a_budget_that_cuts_the_recovery_warns_and_still_trains():
    retain = kit.SlowLoader(
        kit.make_loader(*kit.make_data(80, seed=1), form="dict", batch_size=4), 0.05
    )
    forget = kit.make_loader(*kit.make_data(4, seed=2, shift=2.0), form="dict", batch_size=4)
    net = kit.make_net()
    before = copy.deepcopy(net.state_dict())
    warm_up("cpu")
    seed_everything(0)
    with (
        kit.recorded_steps() as steps,
        pytest.warns(MaskedSmallGradientsBudgetWarning, match="of the 100 planned"),
    ):
        masked_small_gradients(net, retain, forget, kit.Untouchable(), budget_s=0.5)
    assert 1 <= len(steps) < 100
    assert not torch.equal(net.state_dict()["head.weight"], before["head.weight"])
