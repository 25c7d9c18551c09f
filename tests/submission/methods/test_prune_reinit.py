"""``prune_reinit``: its published defaults and its signature step."""

import copy
import inspect
import math
import warnings

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from submission import METHODS, seed_everything
from submission.methods.prune_reinit import (
    PruneReinitBudgetWarning,
    class_weights_from_counts,
    count_labels,
    global_magnitude_prune,
    planned_epochs,
    prune_and_redraw,
    prune_reinit_loss,
    pruned_tensors,
)

from ..conftest import CLASSES, SlowLoader, Untouchable, make_data, make_loader, make_net


def test_prune_reinit_defaults_are_the_published_recipe():
    # xcadet/deepunlearn munl/unlearning/kgltop4.py l. 102-108, 29-36, 53, 194-195
    defaults = {
        k: p.default for k, p in inspect.signature(METHODS["prune_reinit"]).parameters.items()
    }
    assert defaults["prune_amount"] == 0.99
    assert defaults["epochs"] == 3.2
    assert defaults["lr"] == 5e-4
    assert defaults["momentum"] == 0.9
    assert defaults["weight_decay"] == 5e-4
    assert defaults["class_weight_exponent"] == -0.1
    assert defaults["entropy_weight"] == 1.0
    assert defaults["fp16_round_trip"] is True
    assert defaults["budget_s"] is None


def test_the_team_runs_int_of_3_2_epochs_plus_one_step():
    assert planned_epochs(3.2, 20) == [20, 20, 20, 5]  # int(64.0) + 1 = 65 steps
    assert planned_epochs(3.2, 100) == [100, 100, 100, 21]
    assert planned_epochs(0, 20) == []


def two_layers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 16, 3), nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        net[2].weight.mul_(0.01)  # a layer of small weights: a global threshold prunes it all
    return net


def test_one_global_threshold_keeps_exactly_the_top_1_percent():
    net = two_layers()
    tensors = pruned_tensors(net)
    assert [t.numel() for t in tensors] == [576, 16, 640, 10]  # weights and biases, N = 1242
    before = torch.cat([t.detach().flatten() for t in tensors])
    kept = global_magnitude_prune(tensors, 0.99)
    after = torch.cat([t.detach().flatten() for t in tensors])
    assert kept == 1242 - round(0.99 * 1242) == 12
    top = before.abs().topk(12).indices
    assert torch.equal(after.nonzero().flatten().sort().values, top.sort().values)
    assert torch.equal(after[top], before[top])
    assert (net[2].weight == 0).all()  # per-layer pruning would have kept 6 of its weights


def test_pruned_weights_are_redrawn_and_pruned_biases_stay_zero():
    net = two_layers()
    before = [t.detach().clone() for t in pruned_tensors(net)]
    assert prune_and_redraw(net, 0.99) == 12
    after = [t.detach() for t in pruned_tensors(net)]
    keep = torch.zeros(1242, dtype=torch.bool)
    keep[torch.cat([t.flatten() for t in before]).abs().topk(12).indices] = True
    # U(+-1/sqrt(fan_in)) for the weights: fan_in 4 x 3 x 3 for the conv, 64 for the linear
    bounds = [1 / 6, None, 1 / 8, None]
    offset = 0
    for old, new, bound in zip(before, after, bounds, strict=True):
        kept = keep[offset : offset + old.numel()].view_as(old)
        offset += old.numel()
        assert torch.equal(new[kept], old[kept])
        rest = new[~kept]
        if bound is None:  # a bias: pruned entries stay 0
            assert (rest == 0).all()
        else:
            assert (rest != 0).all() and rest.abs().max() <= bound


def test_resnet18_keeps_the_global_top_1_percent_and_redraws_the_rest():
    torch.manual_seed(0)
    net = resnet18(num_classes=CLASSES).eval()
    before = copy.deepcopy(net.state_dict())
    # not seed 0: from the construction's seed the redraws would repeat the construction's
    # default draws (the same uniform_ calls in the same order), and fc.weight would come back
    seed_everything(1)
    METHODS["prune_reinit"](
        net, Untouchable(), Untouchable(), Untouchable(), epochs=0, fp16_round_trip=False
    )
    after = net.state_dict()
    pruned = {k for k, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    keys = [k for k in before if k.rsplit(".", 1)[0] in pruned]
    assert "conv1.weight" in keys and "layer2.0.downsample.0.weight" in keys and "fc.bias" in keys
    flat_before = torch.cat([before[k].flatten() for k in keys])
    flat_after = torch.cat([after[k].flatten() for k in keys])
    n = flat_before.numel()
    kept = n - round(0.99 * n)
    same = flat_after == flat_before
    assert int(same.sum()) == kept
    assert torch.equal(same.nonzero().flatten(), flat_before.abs().topk(kept).indices.sort().values)
    # everything else (BatchNorm parameters and statistics) is untouched
    assert all(torch.equal(after[k], before[k]) for k in before if k not in keys)
    for k in keys:
        rest = after[k][after[k] != before[k]]
        if k.endswith("weight"):  # redrawn from U(+-1/sqrt(fan_in))
            assert rest.abs().max() <= 1 / math.sqrt(after[k][0].numel())
            assert rest.count_nonzero() == rest.numel()
        else:  # a pruned bias stays 0
            assert (rest == 0).all()
    assert not net.training


def test_the_weights_end_rounded_to_float16():
    net = make_net()
    METHODS["prune_reinit"](net, Untouchable(), Untouchable(), Untouchable(), epochs=0)
    for t in [*net.parameters(), *net.buffers()]:
        if t.is_floating_point():
            assert t.dtype == torch.float32
            assert torch.equal(t, t.half().float())


def test_loss_is_weighted_cross_entropy_plus_entropy_matching():
    logits = torch.zeros(3, CLASSES)  # entropy ln 10, cross-entropy ln 10 whatever the weights
    confident = torch.full((3, CLASSES), -100.0)
    confident[:, 0] = 100.0  # entropy ~0
    y = torch.tensor([0, 1, 2])
    weights = class_weights_from_counts(torch.arange(1, CLASSES + 1), -0.1)
    loss = prune_reinit_loss(logits, y, confident, weights)
    assert loss.item() == pytest.approx(math.log(10) + math.log(10) ** 2, rel=1e-6)
    # with distinct per-sample losses the weights are torch's normalised per-sample weights
    logits = torch.randn(3, CLASSES, generator=torch.Generator().manual_seed(0))
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    w = weights[y]
    expected = (w * ce).sum() / w.sum()
    assert prune_reinit_loss(logits, y, logits, weights).item() == pytest.approx(expected.item())


def test_class_weights_are_counts_to_the_minus_0_1():
    weights = class_weights_from_counts(torch.tensor([100, 10, 0]), -0.1)
    torch.testing.assert_close(weights, torch.tensor([100**-0.1, 10**-0.1, 1.0]))
    assert weights.tolist() == pytest.approx([0.630957, 0.794328, 1.0], rel=1e-5)


def test_class_counts_come_from_the_whole_retain_set(tiny_setup):
    _, data, make = tiny_setup
    retain, _, _ = make("dict")
    counts = count_labels(retain, CLASSES, "cpu")
    assert torch.equal(counts, torch.bincount(data["retain"][1], minlength=CLASSES))
    assert int(counts.sum()) == 80


def test_the_full_recipe_runs_without_a_warning(tiny_setup):
    original, _, make = tiny_setup
    seed_everything(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PruneReinitBudgetWarning)
        METHODS["prune_reinit"](copy.deepcopy(original), *make("tuple"))


def test_a_budget_short_of_the_recovery_warns():
    retain = SlowLoader(make_loader(*make_data(160, seed=1), form="dict", batch_size=4), 0.02)
    forget = make_loader(*make_data(4, seed=2, shift=2.0), form="dict", batch_size=4)
    val = make_loader(*make_data(8, seed=3), form="dict", batch_size=4)
    seed_everything(0)
    with pytest.warns(PruneReinitBudgetWarning, match=r"of the 129 planned retain steps"):
        METHODS["prune_reinit"](make_net(), retain, forget, val, budget_s=0.3)
