"""``relearn`` (the kit's default): its regime rule, each regime's damage, the distillation
target and what it learns."""

import inspect
import math

import pytest
import torch
from torch import nn

import submission
import submission.methods.relearn as relearn_module
from submission import METHODS, seed_everything
from submission.helpers import frozen_copy
from submission.loop import Deadline, TrainLoop
from submission.methods.prune_reinit import pruned_tensors
from submission.methods.relearn import choose_regime, reset_epochs_that_fit

from ..conftest import SlowLoader, make_data, make_loader, make_net


def loader_of(n=64, seed=1, batch_size=16):
    images, labels = make_data(n, seed=seed)
    return make_loader(images, labels, form="tuple", batch_size=batch_size)


def test_relearn_is_the_default_and_its_settings_are_the_documented_ones():
    assert submission.DEFAULT_METHOD == "relearn"
    defaults = {k: p.default for k, p in inspect.signature(METHODS["relearn"]).parameters.items()}
    assert defaults["regime"] == "auto"
    assert defaults["epochs"] == 6
    assert defaults["reset_from_epochs"] == 1.5
    assert defaults["keep"] == 0.01  # prune_reinit's 1%
    assert defaults["lr"] == 7e-4
    assert defaults["temperature"] == 2.0 and defaults["distill_weight"] == 0.25
    assert defaults["perturb"] is None and defaults["perturb_lr"] == 3e-3  # shrink_perturb's


@pytest.mark.parametrize(
    "fits, regime",
    [(0.0, "perturb"), (1.05, "perturb"), (1.49, "perturb"), (1.5, "reset"), (6.0, "reset")],
)
def test_the_regime_is_reset_once_enough_epochs_of_relearning_fit(fits, regime):
    assert choose_regime(fits, reset_from_epochs=1.5) == regime


def spy_on_damage(monkeypatch):
    """Record which regime ran: the reset's pruning (its amount) or shrink_perturb's run to
    its end (its settings), without changing either."""
    calls = []
    real_prune, real_perturb = relearn_module.prune_and_redraw, relearn_module.perturb_then_relearn

    def prune(net, amount):
        calls.append(("reset", amount))
        return real_prune(net, amount)

    def perturb(net, retain, deadline, *, handover=None, **settings):
        finished = real_perturb(net, retain, deadline, handover=handover, **settings)
        if finished:
            calls.append(("perturb", settings))
        return finished

    monkeypatch.setattr(relearn_module, "prune_and_redraw", prune)
    monkeypatch.setattr(relearn_module, "perturb_then_relearn", perturb)
    return calls


SHRINK_PERTURB = {"shrink": 1.0, "epochs": 2, "warmup": 0.25, "weight_decay": 0.0, "lr": 3e-3}


def test_auto_chooses_by_the_epochs_that_fit(monkeypatch):
    loader = loader_of()
    calls = spy_on_damage(monkeypatch)
    # no budget: all planned epochs fit, however few
    METHODS["relearn"](make_net(0), loader, loader, loader, epochs=2)
    assert calls == [("reset", pytest.approx(0.99))]
    calls.clear()
    METHODS["relearn"](make_net(0), loader, loader, loader, epochs=1)
    assert calls == [("perturb", {**SHRINK_PERTURB, "perturb": None})]
    calls.clear()
    METHODS["relearn"](make_net(0), loader, loader, loader, epochs=1, regime="reset")
    assert calls == [("reset", pytest.approx(0.99))]
    calls.clear()
    METHODS["relearn"](make_net(0), loader, loader, loader, regime="perturb", perturb=0.3)
    assert calls == [("perturb", {**SHRINK_PERTURB, "perturb": 0.3})]


def test_the_perturb_regime_is_shrink_perturb_with_its_defaults():
    nets = []
    for method, kwargs in (("shrink_perturb", {}), ("relearn", {"regime": "perturb"})):
        loader = loader_of()  # (a loader's own generator moves on with every epoch)
        seed_everything(3)
        net = make_net(0)
        METHODS[method](net, loader, loader, loader, **kwargs)
        nets.append(net.state_dict())
    for name, value in nets[0].items():
        assert torch.equal(value, nets[1][name]), name


def test_a_budget_that_fits_little_relearning_stays_with_shrink_perturb(monkeypatch):
    # 16 steps an epoch, each at least 20 ms: 0.4 s fits at most 1.06 epochs, under 1.5
    loader = SlowLoader(loader_of(batch_size=4), delay_s=0.02)
    calls = spy_on_damage(monkeypatch)
    METHODS["relearn"](make_net(0), loader, loader, loader, budget_s=0.4)
    assert len(calls) == 1 and calls[0][0] == "perturb"
    # a budget that fits many epochs of the tiny net's steps resets after the timing steps
    calls.clear()
    METHODS["relearn"](make_net(0), loader_of(), loader_of(), loader_of(), budget_s=1.0)
    assert calls == [("reset", pytest.approx(0.99))]


def test_reset_epochs_that_fit_add_the_teachers_forward_to_the_timed_steps():
    net = make_net(0)
    loader = loader_of(batch_size=4)  # 16 batches an epoch
    loop = TrainLoop(Deadline(10.0), planned_steps=100)
    # four timed steps: a slow first one (one-off costs), then three of 10 ms
    loop.steps, loop.step_seconds, loop.fastest_step_s = 4, 0.5 + 3 * 0.01, 0.01
    batch = next(iter(loader))
    fits = reset_epochs_that_fit(loop, frozen_copy(net), batch, 16)
    upper = loop.margin * loop.deadline.remaining() / 0.01 / 16
    assert 0.3 * upper < fits < upper  # the teacher's forward costs a fraction of a step
    # the slow first step does not count: by the mean (0.13 s a step) under a fifth would fit
    assert fits > 5 * loop.margin * loop.deadline.remaining() / loop.seconds_per_step / 16
    assert reset_epochs_that_fit(TrainLoop(Deadline(None), planned_steps=1), net, batch, 16) == (
        math.inf
    )


def test_reset_keeps_exactly_the_global_top_share_and_redraws_the_rest():
    # lr 0: the damage alone (BatchNorm statistics still move in train mode; convs do not)
    net = make_net(0)
    before = [t.detach().clone() for t in pruned_tensors(net)]
    METHODS["relearn"](net, loader_of(), loader_of(), loader_of(), regime="reset", lr=0.0, keep=0.1)
    scores = torch.cat([t.abs().flatten() for t in before])
    kept = scores.numel() - round(0.9 * scores.numel())
    top = torch.zeros(scores.numel(), dtype=torch.bool)
    top[torch.topk(scores, kept).indices] = True
    after = torch.cat([t.detach().flatten() for t in pruned_tensors(net)])
    unchanged = after == torch.cat([t.flatten() for t in before])
    assert torch.equal(unchanged, top)


def test_perturb_mixes_in_a_fresh_draw_and_trains_nothing_at_lr_0():
    net = make_net(0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loader = loader_of()
    METHODS["relearn"](net, loader, loader, loader, regime="perturb", perturb=0.5, perturb_lr=0.0)
    after = net.state_dict()
    for name, layer in net.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            diff = after[f"{name}.weight"] - before[f"{name}.weight"]
            # w + 0.5 * w_init: the change has half the scale of the layer's own initialisation
            bound = 1.0 / layer.weight[0].numel() ** 0.5
            assert 0 < diff.abs().max() <= 0.5 * bound + 1e-6


def test_reset_distils_the_original_not_the_damaged_network(monkeypatch):
    loader = loader_of()
    net = make_net(0)
    original = make_net(0).eval()
    seen = []
    real = relearn_module.teacher_kl

    def spy(student_logits, teacher_logits, temperature):
        seen.append((teacher_logits.detach().clone(), temperature))
        return real(student_logits, teacher_logits, temperature)

    monkeypatch.setattr(relearn_module, "teacher_kl", spy)
    inputs = []
    # the student's inputs (the teacher, a deep copy, carries the hook but runs in eval mode)
    net.register_forward_pre_hook(
        lambda m, args: inputs.append(args[0].detach().clone()) if m.training else None
    )
    METHODS["relearn"](net, loader, loader, loader, epochs=2, temperature=3.0)
    assert len(seen) == 2 * len(loader)  # every retain step, none of them a timing step
    for (target, temperature), x in zip(seen, inputs, strict=True):
        assert temperature == 3.0
        with torch.no_grad():
            torch.testing.assert_close(target, original(x))
    # the perturb regime fine-tunes on labels alone
    seen.clear()
    METHODS["relearn"](make_net(0), loader, loader, loader, epochs=1)
    assert seen == []
    # without the teacher's term, it is never computed
    METHODS["relearn"](make_net(0), loader, loader, loader, epochs=2, distill_weight=0.0)
    assert seen == []


def test_reset_relearns_the_retain_set():
    seed_everything(0)
    labels = torch.arange(128) % 10
    patterns = torch.randn(10, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    images = patterns[labels] + 0.5 * torch.randn(128, 3, 8, 8)
    loader = make_loader(images, labels, form="tuple", batch_size=16)
    net = make_net(0)
    trained = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):  # a confident original to distil from
        for x, y in loader:
            trained.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            trained.step()
    net.eval()
    with torch.no_grad():
        original_acc = (net(images).argmax(1) == labels).float().mean().item()
    METHODS["relearn"](net, loader, loader, loader, regime="reset", epochs=20, lr=1e-2)
    with torch.no_grad():
        acc = (net(images).argmax(1) == labels).float().mean().item()
    assert original_acc > 0.9 and acc > 0.8 * original_acc


@pytest.mark.parametrize(
    "kwargs",
    [
        {"regime": "retrain"},
        {"keep": 1.5},
        {"epochs": 0},
        {"temperature": 0.0},
        {"distill_weight": -1.0},
    ],
)
def test_relearn_refuses_bad_settings(kwargs):
    loader = loader_of()
    with pytest.raises(ValueError):
        METHODS["relearn"](make_net(0), loader, loader, loader, **kwargs)
