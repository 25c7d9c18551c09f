"""``relearn`` (the kit's default): its regime rule, each regime's damage, the distillation
target and what it learns."""

import inspect
import math
import time

import pytest
import torch
from torch import nn

import submission
import submission.methods.relearn as relearn_module
from local_eval.scoring.metric import logit_scaled_confidence
from submission import METHODS, seed_everything
from submission.loop import Deadline, TrainLoop
from submission.methods.prune_reinit import pruned_tensors
from submission.methods.relearn import (
    choose_regime,
    epoch_steps,
    estimated_reset_epochs,
    first_batch,
    measured_reset_epochs,
)

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
    assert defaults["reset_below_logodds"] == 5.0
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


@pytest.mark.parametrize(
    "fits, logodds, regime",
    [
        (6.0, 2.3, "reset"),  # the organisers' recipe: a modest held-out confidence
        (6.0, 4.99, "reset"),
        (6.0, 5.0, "perturb"),  # saturated: however many epochs fit
        (6.0, 9.2, "perturb"),  # the small CNN's 10-epoch recipe on digits
        (1.0, 2.3, "perturb"),  # too little fits, whatever the confidence
        (6.0, math.nan, "reset"),  # not read (no validation set): the epochs decide
    ],
)
def test_a_saturated_original_takes_the_perturb_regime_however_much_fits(fits, logodds, regime):
    assert choose_regime(fits, reset_from_epochs=1.5, held_out_logodds=logodds,
                         reset_below_logodds=5.0) == regime  # fmt: skip


def test_median_logodds_is_the_median_true_class_log_odds_of_the_first_examples():
    torch.manual_seed(0)
    images, labels = make_data(40, seed=2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(images[0].numel(), 10), nn.BatchNorm1d(10)).train()
    loader = make_loader(images, labels, form="tuple", batch_size=16, shuffle=False)
    with torch.no_grad():
        z = net.eval()(images).double()
    net.train()
    # the competition's logit-scaled confidence, as the evaluator's scorer computes it
    odds = logit_scaled_confidence(z.numpy(), labels.numpy()).tolist()
    stream = torch.get_rng_state()
    def median(values):  # torch's: the lower middle value of an even count
        return sorted(values)[(len(values) - 1) // 2]

    # (the net's float32 logits by batches of 16 against all 40 at once: 1e-6 apart at most)
    assert relearn_module.median_logodds(net, loader, "cpu") == pytest.approx(
        median(odds), abs=1e-6
    )
    assert relearn_module.median_logodds(net, loader, "cpu", limit=20) == pytest.approx(
        median(odds[:20]), abs=1e-6
    )
    assert median(odds[:20]) != pytest.approx(median(odds), abs=1e-3)  # the limit matters
    assert net.training and torch.equal(torch.get_rng_state(), stream)
    assert math.isnan(relearn_module.median_logodds(net, [], "cpu"))


def test_auto_reads_the_originals_held_out_confidence_only_when_reset_fits(monkeypatch):
    calls, read = spy_on_damage(monkeypatch), []

    def reading(value):
        def median_logodds(net, loader, device, **kw):
            read.append(loader)
            return value
        return median_logodds

    loader, val = loader_of(), loader_of(seed=5)
    monkeypatch.setattr(relearn_module, "median_logodds", reading(9.0))  # saturated
    METHODS["relearn"](make_net(0), loader, loader, val)  # no budget: every epoch fits
    assert calls == [("perturb", {**SHRINK_PERTURB, "perturb": None})] and read == [val]
    calls.clear()
    monkeypatch.setattr(relearn_module, "median_logodds", reading(2.0))
    METHODS["relearn"](make_net(0), loader, loader, val)
    assert calls == [("reset", pytest.approx(0.99))]
    calls.clear(), read.clear()
    monkeypatch.setattr(relearn_module, "RESET_STEP_FORWARDS", 1e6)  # nothing fits 1.5 epochs
    METHODS["relearn"](make_net(0), loader, loader, val, budget_s=1.0)
    assert calls == [("perturb", {**SHRINK_PERTURB, "perturb": None})] and read == []
    calls.clear()
    monkeypatch.setattr(relearn_module, "median_logodds", reading(9.0))
    METHODS["relearn"](make_net(0), loader, loader, val, regime="reset")  # forced: not read
    assert calls == [("reset", pytest.approx(0.99))] and read == []


class Calls(list):
    """A list that carries a second record (``handed``)."""


def spy_on_damage(monkeypatch):
    """Record which regime ran: the reset's pruning (its amount) or shrink_perturb's run (its
    settings), without changing either; ``handed`` gets the weights shrink_perturb started from."""
    calls, handed = Calls(), []
    real_prune, real_perturb = relearn_module.prune_and_redraw, relearn_module.perturb_then_relearn

    def prune(net, amount):
        calls.append(("reset", amount))
        return real_prune(net, amount)

    def perturb(net, retain, deadline, **settings):
        calls.append(("perturb", settings))
        handed.append({k: v.clone() for k, v in net.state_dict().items()})
        return real_perturb(net, retain, deadline, **settings)

    monkeypatch.setattr(relearn_module, "prune_and_redraw", prune)
    monkeypatch.setattr(relearn_module, "perturb_then_relearn", perturb)
    calls.handed = handed
    return calls


SHRINK_PERTURB = {
    "shrink": 1.0, "epochs": 2, "warmup": 0.25, "weight_decay": 0.0, "lr": 3e-3, "scale_lr": True
}


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


def test_an_estimate_that_little_fits_goes_to_shrink_perturb_without_damage(monkeypatch):
    # a step as costly as a million forwards: no budget of 1 s fits 1.5 epochs of them
    monkeypatch.setattr(relearn_module, "RESET_STEP_FORWARDS", 1e6)
    calls = spy_on_damage(monkeypatch)
    net = make_net(0)
    original = {k: v.clone() for k, v in net.state_dict().items()}
    METHODS["relearn"](net, loader_of(), loader_of(), loader_of(), budget_s=1.0)
    assert calls == [("perturb", {**SHRINK_PERTURB, "perturb": None})]
    for name, value in original.items():  # shrink_perturb started from the original itself
        assert torch.equal(calls.handed[0][name], value), name


def test_the_reset_loop_falls_back_to_the_original_when_its_own_steps_are_too_slow(monkeypatch):
    # the tiny net's forwards promise many epochs (1.5 would need forwards of 9 ms); its reset
    # steps, with the loader's 50 ms a batch, fit at most 0.85 * 1 / 0.05 / 16 = 1.06 epochs
    loader = SlowLoader(loader_of(batch_size=4), delay_s=0.05)
    calls = spy_on_damage(monkeypatch)
    net = make_net(0)
    original = {k: v.clone() for k, v in net.state_dict().items()}
    METHODS["relearn"](net, loader, loader, loader_of(), budget_s=1.0)  # (slow retain steps)
    assert calls == [
        ("reset", pytest.approx(0.99)),
        ("perturb", {**SHRINK_PERTURB, "perturb": None}),
    ]
    for name, value in original.items():  # the damage and the reset's steps are undone
        assert torch.equal(calls.handed[0][name], value), name
    # a budget that fits many epochs of the tiny net's steps stays reset
    calls.clear()
    METHODS["relearn"](make_net(0), loader_of(), loader_of(), loader_of(), budget_s=1.0)
    assert calls == [("reset", pytest.approx(0.99))]


def test_a_forced_reset_is_not_checked(monkeypatch):
    loader = SlowLoader(loader_of(batch_size=4), delay_s=0.05)
    calls = spy_on_damage(monkeypatch)
    METHODS["relearn"](make_net(0), loader, loader, loader, budget_s=1.0, regime="reset")
    assert calls == [("reset", pytest.approx(0.99))]


class Sleepy(nn.Module):
    """A BatchNorm net whose every forward takes at least 10 ms."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x):
        time.sleep(0.01)
        return self.norm(x).flatten(1)[:, :10]


def test_the_estimate_counts_a_reset_step_as_four_forwards_and_leaves_the_net_as_it_was():
    net = Sleepy().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batch = next(iter(loader_of(batch_size=4)))
    deadline = Deadline(10.0)
    fits = estimated_reset_epochs(net, batch, deadline, 16)
    upper = 0.85 * 10.0 / (4 * 0.01) / 16  # 13.3: forwards of exactly 10 ms
    assert 0.5 * upper < fits <= upper
    assert net.training
    for name, value in before.items():  # eval-mode forwards: no BatchNorm statistic moved
        assert torch.equal(net.state_dict()[name], value), name
    assert estimated_reset_epochs(net, batch, Deadline(None), 16) == math.inf


def test_the_check_reads_the_fastest_reset_step():
    loop = TrainLoop(Deadline(10.0), planned_steps=100)
    # four timed steps: a slow first one (one-off costs), then three of 10 ms
    loop.steps, loop.step_seconds, loop.fastest_step_s = 4, 0.5 + 3 * 0.01, 0.01
    fits = measured_reset_epochs(loop, 16)
    assert fits == pytest.approx(loop.margin * 10.0 / 0.01 / 16, rel=1e-3)
    # by the mean (0.13 s a step) under a tenth of that would fit
    assert fits > 10 * loop.margin * 10.0 / loop.seconds_per_step / 16
    assert measured_reset_epochs(TrainLoop(Deadline(None), planned_steps=1), 16) == math.inf


def test_the_estimates_batch_leaves_the_global_random_stream_alone():
    images, labels = make_data(64, seed=1)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels), batch_size=16, shuffle=True
    )
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    x, y = first_batch(loader, torch.device("cpu"))
    assert x.shape == (16, *images.shape[1:]) and y.shape == (16,)
    assert torch.equal(torch.rand(3), expected)


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
    # every retain step, none of them a timing step (an epoch of these 64 examples is 18
    # passes: epoch_passes)
    assert len(seen) == 2 * 18 * len(loader)
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


def test_the_reset_regimes_epoch_of_a_small_retain_set_is_several_passes():
    assert epoch_steps(loader_of()) == 18 * 4  # 64 examples in 4 batches: 18 passes an epoch
    assert epoch_steps(loader_of(n=1132, batch_size=64)) == 18  # the design's size: one pass
