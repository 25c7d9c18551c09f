"""``forget_contrast``: its published defaults and its signature step."""

import contextlib
import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from submission import METHODS, seed_everything
from submission.loop import warm_up
from submission.methods.forget_contrast import (
    ForgetContrastBudgetWarning,
    kl_from_uniform,
    merged_batches,
    output_contrast,
)
from tests.submission import conftest as kit

forget_contrast = METHODS["forget_contrast"]


@contextlib.contextmanager
def recorded(net):
    """Every optimizer step ``(optimizer id, lr, momentum, weight decay)`` and the batch size
    of every forward pass of ``net`` inside the block."""
    steps, sizes = [], []

    def hook(optimizer, args, kwargs):
        group = optimizer.param_groups[0]
        steps.append((id(optimizer), group["lr"], group["momentum"], group["weight_decay"]))

    handles = [
        register_optimizer_step_pre_hook(hook),
        net.register_forward_pre_hook(lambda m, inputs: sizes.append(len(inputs[0]))),
    ]
    try:
        yield steps, sizes
    finally:
        for handle in handles:
            handle.remove()


def test_defaults_are_the_teams_recipe():
    # xcadet/deepunlearn munl/unlearning/kgltop1.py: 8 rounds (l. 27); first pass SGD lr 5e-3,
    # mom 0.9 (l. 30-31); T 1.15 (l. 44); forget SGD lr 3e-4, mom 0.9 (l. 38-39), cosine to
    # 1e-6 (l. 42); retain SGD lr 1e-3 x batch 256 / 64 (l. 28, 34, 95), mom 0.9, wd 1e-2
    # (l. 35-36); the retain batch of 256 is 4 loader batches of the competition's 64
    defaults = kit.keyword_defaults(forget_contrast)
    assert defaults == {
        "budget_s": None,
        "epochs": 8,
        "flatten_lr": 5e-3,
        "flatten_momentum": 0.9,
        "temperature": 1.15,
        "forget_lr": 3e-4,
        "forget_lr_min": 1e-6,
        "forget_momentum": 0.9,
        "retain_batch": 256,
        "retain_lr": 1e-3,
        "retain_momentum": 0.9,
        "retain_weight_decay": 1e-2,
    }
    assert defaults["retain_lr"] * defaults["retain_batch"] / 64 == pytest.approx(4e-3)


def test_kl_from_uniform_is_torchs_kldivloss_against_a_uniform_target():
    # p = softmax([0, ln 3]) = (1/4, 3/4): KL(u || p) = 1/2 ln(1/2 / 1/4) + 1/2 ln(1/2 / 3/4)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    expected = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert kl_from_uniform(logits).item() == pytest.approx(expected, rel=1e-6)
    assert kl_from_uniform(torch.full((3, 5), 7.0)).item() == pytest.approx(0.0, abs=1e-6)
    # the team's loss (kgltop1.py l. 18-20, 137-142), on a batch
    torch.manual_seed(0)
    batch = torch.randn(6, 10)
    uniform = torch.full_like(batch, 0.1)
    team = torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(batch, dim=-1), uniform)
    assert kl_from_uniform(batch).item() == pytest.approx(team.item(), rel=1e-6)
    # the other direction, KL(p || u), which the kit's previous version minimised, differs
    p = F.softmax(batch, dim=1)
    reverse = (p * (p.log() + math.log(10))).sum(1).mean()
    assert abs(reverse.item() - team.item()) > 1e-3


def test_output_contrast_golden_and_retain_side_detached():
    forget_logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    retain_logits = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    sim = torch.tensor([[1.0, 2.0, 0.0], [2.0, 0.0, 2.0]]) / 1.15
    expected = -(sim - sim.logsumexp(dim=1, keepdim=True)).mean()
    loss = output_contrast(forget_logits, retain_logits, 1.15)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert forget_logits.grad is not None and retain_logits.grad is None  # retain detached


def test_merged_batches_concatenate_consecutive_batches():
    batches = [(torch.full((2, 1), float(i)), torch.full((2,), i)) for i in range(5)]
    merged = list(merged_batches(batches, 2))
    assert [len(y) for _, y in merged] == [4, 4, 2]  # the last group is shorter
    assert merged[1][1].tolist() == [2, 2, 3, 3]


def test_first_pass_lowers_the_forget_sets_confidence():
    # a confident model without BatchNorm (whose running statistics would move too): the pass
    # itself needs no layer of any type
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, kit.CLASSES),
    )
    with torch.no_grad():
        net[-1].weight.mul_(30)
    x_forget, y_forget = kit.make_data(32, seed=2, shift=2.0)
    forget = kit.make_loader(x_forget, y_forget, form="tuple", batch_size=4)  # 8 batches
    with torch.no_grad():
        before = F.softmax(net(x_forget), dim=1)
    seed_everything(0)
    with recorded(net) as (steps, _):
        # epochs=0: the first pass alone, which reads the forget set only
        forget_contrast(net, kit.Untouchable(), forget, kit.Untouchable(), epochs=0)
    assert not net.training
    assert [s[1:] for s in steps] == 8 * [(5e-3, 0.9, 0)]  # its own SGD, no decay
    with torch.no_grad():
        after = F.softmax(net(x_forget), dim=1)
    # the predictions move to near uniform (max 1 / 10): less confident, far smaller KL(u || p)
    assert before.max(dim=1).values.mean() > 0.5
    assert after.max(dim=1).values.mean() < 0.2
    assert kl_from_uniform(after.log()) < 0.05 * kl_from_uniform(before.log())


def test_rounds_alternate_forget_and_merged_retain_batches_on_the_published_rates(tiny_setup):
    original, _, make = tiny_setup
    retain, forget, _ = make("dict")  # 20 retain batches of 4, 1 forget batch of 4
    net = copy.deepcopy(original)
    seed_everything(0)
    with recorded(net) as (steps, sizes), warnings.catch_warnings():
        warnings.simplefilter("error", ForgetContrastBudgetWarning)
        # val is never read; a retain batch of 16 is 4 of these loaders' batches of 4
        forget_contrast(net, retain, forget, kit.Untouchable(), retain_batch=16)
    # the first pass, then 8 x (one forget step, 5 retain steps of 4 merged batches)
    assert len(steps) == 1 + 8 * (1 + 5)
    assert len({s[0] for s in steps}) == 3  # three optimizers, each built once
    flatten, rounds = steps[0], steps[1:]
    assert flatten[1:] == (5e-3, 0.9, 0)
    forget_steps = rounds[0::6]
    retain_steps = [s for i, s in enumerate(rounds) if i % 6]
    assert [s[1] for s in retain_steps] == pytest.approx([2.5e-4] * 40)  # 1e-3 x 16 / 64
    assert {s[2:] for s in retain_steps} == {(0.9, 1e-2)}
    # CosineAnnealingLR(T_max=8 forget steps, eta_min=1e-6), stepped per forget step
    cosine = [1e-6 + (3e-4 - 1e-6) * (1 + math.cos(math.pi * t / 8)) / 2 for t in range(8)]
    assert [s[1] for s in forget_steps] == pytest.approx(cosine, rel=1e-9)
    assert {s[2:4] for s in forget_steps} == {(0.9, 0)}
    # forward batch sizes: first pass 4; each round: forget 4 against 16 retain, 5 x 16 retain
    assert sizes == [4] + 8 * [4, 16, 16, 16, 16, 16, 16]


def test_a_budget_runs_the_forget_rounds_whole_and_warns_for_the_retain_rounds():
    # every retain batch takes 0.02 s: a forget step (4 retain batches) and a retain step
    # (4 merged batches) both cost 0.08 s; the 9 forget-set steps and at least one retain step
    # a round (1.4 s) fit in 2.5 s, the 40 retain steps (3.2 s more) do not
    retain = kit.SlowLoader(
        kit.make_loader(*kit.make_data(80, seed=1), form="dict", batch_size=4), 0.02
    )
    forget = kit.make_loader(*kit.make_data(4, seed=2, shift=2.0), form="dict", batch_size=4)
    net = kit.make_net()
    warm_up("cpu")  # torch's one-off costs (seconds) must not eat the budget
    seed_everything(0)
    with recorded(net) as (steps, _), pytest.warns(ForgetContrastBudgetWarning, match="of the 40"):
        forget_contrast(net, retain, forget, kit.Untouchable(), budget_s=2.5)  # taken as 64s: 4
    by_optimizer = {}
    for s in steps:
        by_optimizer.setdefault(s[0], []).append(s)
    first, forget_steps, *retain_steps = by_optimizer.values()
    assert len(first) == 1 and len(forget_steps) == 8  # not cut
    assert retain_steps and 1 <= len(retain_steps[0]) < 40


@pytest.mark.parametrize(("loader_batch", "merged"), [(64, 4), (32, 8), (128, 2), (None, 4)])
def test_the_retain_batch_is_256_examples_whatever_the_loaders_batch(loader_batch, merged):
    """The team's 256 at the team's rate 1e-3 x 256 / 64 from loaders of any batch size (one of
    unknown size, a plain list, taken to hold 64)."""
    x, y = kit.make_data(512, seed=1)
    if loader_batch is None:
        retain = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 512, 64)]
    else:
        retain = kit.make_loader(x, y, form="tuple", batch_size=loader_batch)
    forget = kit.make_loader(*kit.make_data(4, seed=2, shift=2.0), form="tuple", batch_size=4)
    net = kit.make_net()
    with recorded(net) as (steps, sizes):
        forget_contrast(net, retain, forget, [], epochs=1)
    retain_steps = steps[2:]  # after the first pass and the one forget step
    assert [s[1] for s in retain_steps] == pytest.approx([4e-3, 4e-3])
    assert sizes[-2:] == [256, 256]
