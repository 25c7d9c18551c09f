"""Method-specific checks for the seed-paper methods and the competition entries.

The shared contract (weights change, shapes kept, inputs untouched, budget, eval mode) is
tested for every registered method in test_methods.py; here each method's own maths.
"""

import copy
import math
import time
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import submission.methods.shrink_perturb as shrink_perturb_module
from submission import METHODS, seed_everything
from submission.helpers import last_linear
from submission.loop import record_timings, warm_up
from submission.methods.contrastive import contrastive_unlearning_loss
from submission.methods.fisher_forgetting import (
    FisherAccumulator,
    FisherSubsampleWarning,
    noise_variance,
)
from submission.methods.shrink_perturb import auto_perturb, rate_scale, shrink_and_perturb
from submission.methods.svd_projection import forget_projection, scaled_projector
from submission.methods.svd_projection import projection_seconds_per_cube as svd_projection_rate

from .conftest import (
    SlowLoader,
    TinyNet,
    Untouchable,
    keyword_defaults,
    make_data,
    make_loader,
    make_net,
    recorded_steps,
)

# --- fisher_forgetting -------------------------------------------------------------------


def naive_fisher(net, x):
    """sum_y p(y|x) (d CE(x, y) / dw)**2, averaged over samples: one backward per (x, y)."""
    params = [p for p in net.parameters() if p.requires_grad]
    sums = [torch.zeros_like(p) for p in params]
    for xi in x:
        logits = net(xi[None])
        probs = F.softmax(logits, dim=1)[0].detach()
        for c in range(logits.shape[1]):
            loss = F.cross_entropy(logits, torch.tensor([c]))
            grads = torch.autograd.grad(loss, params, retain_graph=True)
            for s, g in zip(sums, grads, strict=True):
                s += probs[c] * g.square()
    return [s / len(x) for s in sums]


def test_batched_fisher_matches_one_backward_per_sample_and_class():
    net = make_net()
    x, _ = make_data(5, seed=4)
    fisher = FisherAccumulator(net, chunk=7)  # 50 (sample, class) pairs: chunks cut samples
    fisher.add(x)
    expected = naive_fisher(net, x)
    for got, want in zip(fisher.mean().values(), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-9)


def test_noise_variance_is_alpha_over_fisher_clamped():
    f = torch.tensor([0.0, 1e-4, 1.0, 100.0])
    var = noise_variance(f, alpha=1e-6, clamp=1e3, official=False)
    torch.testing.assert_close(var, torch.tensor([1e-3, 1e-3, 1e-6, 1e-8]) * 1.0)


def official_variance(fisher, *, classifier: bool, alpha=1e-6):
    """The published rule (the authors' get_mean_var) for a 1-D or 2-D tensor, element by
    element: clamp 1e3 (1e2 for the classifier), times alpha, a 2-D tensor's row averaged
    (dim 1), times 10 for the classifier and for 1-D tensors."""
    clamp = 1e2 if classifier else 1e3
    var = torch.empty_like(fisher)
    for i in range(fisher.shape[0]):
        if fisher.ndim == 2:
            row = [alpha * min(1.0 / (float(v) + 1e-8), clamp) for v in fisher[i]]
            var[i] = sum(row) / len(row)
        else:
            var[i] = alpha * min(1.0 / (float(fisher[i]) + 1e-8), clamp)
    return var * 10 if classifier or fisher.ndim == 1 else var


def test_the_noise_variance_follows_the_official_rule_on_a_small_model():
    net = TinyNet()
    head = {id(p) for p in last_linear(net).parameters()}
    generator = torch.Generator().manual_seed(0)
    for _, p in net.named_parameters():
        fisher = torch.rand(p.shape, generator=generator) ** 4  # spans the clamp
        classifier = id(p) in head
        got = noise_variance(fisher, alpha=1e-6, clamp=1e2 if classifier else 1e3,
                             classifier=classifier)  # fmt: skip
        if p.ndim <= 2:  # BatchNorm and biases, the Linear head
            torch.testing.assert_close(got, official_variance(fisher, classifier=classifier))
        else:  # a conv (O, I, kh, kw): the mean over dim 1 only, kept per kernel position
            for o, i, h, w in [(0, 0, 0, 0), (1, 2, 1, 2), (p.shape[0] - 1, 0, 2, 1)]:
                column = fisher[o, :, h, w]
                want = (1e-6 * (1.0 / (column + 1e-8)).clamp(max=1e3)).mean()
                assert got[o, i, h, w].item() == pytest.approx(want.item(), rel=1e-6)
        if p.ndim > 1:  # one variance per output unit (per position), broadcast along dim 1
            assert torch.equal(got, got[:, :1].expand_as(got))
    assert noise_variance(torch.ones(3), alpha=1.0, clamp=1e3).tolist() == pytest.approx([10.0] * 3)


def test_fisher_forgetting_draws_the_official_variance(tiny_setup):
    original, _, make = tiny_setup
    retain, forget, val = make("tuple")
    fisher = FisherAccumulator(copy.deepcopy(original).eval())
    for x, _ in retain:
        fisher.add(x)
    net = copy.deepcopy(original)
    seed_everything(0)
    METHODS["fisher_forgetting"](net, retain, forget, val)
    head = {id(p) for p in last_linear(original).parameters()}
    z = []
    for (name, p), (_, p0) in zip(net.named_parameters(), original.named_parameters(), strict=True):
        classifier = id(p0) in head
        var = noise_variance(fisher.mean()[name], alpha=1e-6,
                             clamp=1e2 if classifier else 1e3, classifier=classifier)  # fmt: skip
        z.append(((p - p0).detach() / var.sqrt()).flatten())
    z = torch.cat(z)
    assert 0.8 < z.square().mean().item() < 1.25  # the moves have the official spread


def test_fisher_noise_scales_as_alpha_over_fisher(tiny_setup):
    """Weights the retain set needs (high Fisher) move less; the scaled moves are N(0, 1)."""
    original, _, make = tiny_setup
    retain, forget, val = make("tuple")
    # Clamps out of the way, so every weight's variance is alpha / (F + 1e-8).
    alpha, clamp = 1e-6, 1e12
    fisher = FisherAccumulator(copy.deepcopy(original).eval())
    for x, _ in retain:
        fisher.add(x)
    net = copy.deepcopy(original)
    seed_everything(0)
    METHODS["fisher_forgetting"](
        net, retain, forget, val, alpha=alpha, clamp=clamp, classifier_clamp=clamp,
        official_variance=False,
    )  # fmt: skip

    moves, stds, fishers = [], [], []
    for (name, p), (_, p0) in zip(net.named_parameters(), original.named_parameters(), strict=True):
        f = fisher.mean()[name]
        var = noise_variance(f, alpha=alpha, clamp=clamp, official=False)
        moves.append((p - p0).detach().flatten())
        stds.append(var.sqrt().flatten())
        fishers.append(f.flatten())
    moves, stds, fishers = torch.cat(moves), torch.cat(stds), torch.cat(fishers)
    z = moves / stds
    assert 0.8 < z.square().mean().item() < 1.25  # ~500 weights: chi-square within ~2.5 sd
    # Split by Fisher: the high half gets far smaller noise, and in both halves the moves have
    # exactly the predicted spread (z**2 averages 1).
    order = fishers.argsort()
    low, high = order[: len(order) // 2], order[len(order) // 2 :]
    assert stds[high].mean() < 0.5 * stds[low].mean()
    assert moves[high].abs().mean() < 0.5 * moves[low].abs().mean()
    for half in (low, high):
        assert 0.7 < z[half].square().mean().item() < 1.35


def test_fisher_says_what_it_skipped(tiny_setup):
    original, _, make = tiny_setup
    net = copy.deepcopy(original)
    with pytest.warns(FisherSubsampleWarning, match="6 retain samples"):
        METHODS["fisher_forgetting"](net, *make("dict"), max_samples=6)
    assert net.fisher_samples_ == {"samples": 6, "batches": 2, "planned": 20}
    with warnings.catch_warnings():
        warnings.simplefilter("error", FisherSubsampleWarning)
        METHODS["fisher_forgetting"](copy.deepcopy(original), *make("dict"))


# --- contrastive ---------------------------------------------------------------------------


def official_contrastive(anchors, anchor_labels, others, other_labels, temperature):
    """The official Loss_v1 (Hongkyu-Lee/Contrastive-Unlearning), anchor by anchor, in
    plain Python: s_j = a.o_j / T less max_j s_j; P = sum over same-class j of
    (exp(s_j) + 1e-20); loss_i = -(sum over other-class j of s_j - R log P) / #other-class."""
    losses = []
    for a, ya in zip(anchors.tolist(), anchor_labels.tolist(), strict=True):
        s = [sum(x * y for x, y in zip(a, o, strict=True)) / temperature for o in others.tolist()]
        top = max(s)
        s = [v - top for v in s]
        same = [yo == ya for yo in other_labels.tolist()]
        positives = sum(math.exp(v) + 1e-20 for v, m in zip(s, same, strict=True) if m)
        pulled = [v for v, m in zip(s, same, strict=True) if not m]
        losses.append(-(sum(pulled) - len(s) * math.log(positives)) / len(pulled))
    return sum(losses) / len(losses)


def test_contrastive_loss_equals_the_official_formula_on_a_fixed_batch():
    # golden: anchor (1, 0); others (1, 0) of its class, (0, 1) of another; T = 1:
    # s - max = (0, -1), P = 1, so the loss is -(-1 - 2 log 1) / 1 = 1
    anchors = torch.tensor([[1.0, 0.0]])
    others = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = contrastive_unlearning_loss(
        anchors, torch.tensor([0]), others, torch.tensor([0, 1]), 1.0
    )
    assert loss.item() == pytest.approx(1.0)
    # a fixed batch: 6 forget anchors, 16 retain samples, 3 classes, every anchor's class present
    generator = torch.Generator().manual_seed(3)
    a = F.normalize(torch.randn(6, 5, generator=generator), dim=1)
    o = F.normalize(torch.randn(16, 5, generator=generator), dim=1)
    ya, yo = torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(16) % 3
    got = contrastive_unlearning_loss(a, ya, o, yo, 0.7)
    assert got.item() == pytest.approx(official_contrastive(a, ya, o, yo, 0.7), rel=1e-5)
    # not the standard supervised-contrastive loss (log-sum-exp over every retain sample)
    standard = -(torch.log_softmax(a @ o.T / 0.7, 1) * (ya[:, None] != yo)).sum(1) / (
        (ya[:, None] != yo).sum(1)
    )
    assert abs(got.item() - standard.mean().item()) > 0.1
    # no other class anywhere: zero, still differentiable
    lone = contrastive_unlearning_loss(
        anchors, torch.tensor([0]), others, torch.tensor([0, 0]), 1.0
    )
    assert lone.item() == 0.0


def test_contrastive_stops_once_forget_accuracy_reaches_the_unseen_level(tiny_setup):
    """Val labels = the original's predictions: unseen accuracy 1, so one epoch is enough."""
    original, data, _ = tiny_setup
    xv, _ = data["val"]
    with torch.no_grad():
        yv = original(xv).argmax(1)
    retain = make_loader(*data["retain"], form="tuple", batch_size=4)
    forget = make_loader(*data["forget"], form="tuple", batch_size=4)
    val = make_loader(xv, yv, form="tuple", batch_size=4)
    with record_timings() as timings:
        METHODS["contrastive"](
            copy.deepcopy(original), retain, forget, val, retain_batches=3, max_epochs=5
        )
    # one epoch (1 forget batch x 3 retain batches), then the forget check (1) and the current
    # val accuracy (4 batches): the forget accuracy is at or below it, so it stops
    assert timings.steps == 3 + 1 + 4


def test_contrastive_reads_the_whole_sets_for_its_stopping_rule_under_a_budget(tiny_setup):
    """Under a budget far short of the 30 passes planned, the check after the first pass still
    reads all of ``val`` (labels = the model's predictions, lr 0: the rule stops it there)."""
    warm_up("cpu")
    original, data, _ = tiny_setup
    xv = make_data(80, seed=5)[0]
    with torch.no_grad():
        yv = original(xv).argmax(1)
    val = SlowLoader(make_loader(xv, yv, form="tuple", batch_size=4), delay_s=0.01)
    retain = make_loader(*data["retain"], form="tuple", batch_size=4)
    forget = make_loader(*data["forget"], form="tuple", batch_size=4)
    METHODS["contrastive"](copy.deepcopy(original), retain, forget, val, budget_s=2.0, lr=0.0)
    assert val.read == 20


# --- svd_projection ------------------------------------------------------------------------


def test_scaled_projector_golden_values():
    # Gram diag(3, 1): s = (0.75, 0.25); lam = a s / ((a - 1) s + 1) with a = 100.
    proj = scaled_projector(torch.diag(torch.tensor([3.0, 1.0])), 100.0)
    lam = [100 * s / (99 * s + 1) for s in (0.75, 0.25)]
    torch.testing.assert_close(proj.float(), torch.diag(torch.tensor(lam)))
    # No forget activations at all: the projection is the identity.
    eye = forget_projection(torch.eye(3), torch.zeros(3, 3), retain_scale=100, forget_scale=3)
    torch.testing.assert_close(eye.float(), torch.eye(3))


def _tiny_projection_case():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 3)).eval()
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 3, (40,))
    retain = DataLoader(TensorDataset(x[:30], y[:30]), batch_size=10)
    forget = DataLoader(TensorDataset(x[30:], y[30:]), batch_size=10)
    return net, retain, forget


def test_svd_projection_predicts_the_first_layer_instead_of_running_it(monkeypatch):
    """Under a budget, the first layer's cost comes from the timed small projection (here
    patched to 1 s per D**3): the 256-input classifier (1.7e7 s predicted) is skipped, not
    run and overrun, and the 9-input convolution (729 s) fits the 1000 s budget."""
    from submission.methods import svd_projection as svd

    monkeypatch.setattr(svd, "projection_seconds_per_cube", lambda **kwargs: 1.0)
    net, retain, forget = _tiny_projection_case()
    conv, linear = net[0].weight.detach().clone(), net[2].weight.detach().clone()
    with pytest.warns(UserWarning, match="projected 1 of 2 supported layers"):
        METHODS["svd_projection"](net, retain, forget, None, budget_s=1000.0)
    assert torch.equal(net[2].weight, linear)
    assert not torch.equal(net[0].weight, conv)
    assert net.svd_projected_["layers"] == 1


def test_svd_projection_without_a_budget_times_nothing_and_projects_every_layer(monkeypatch):
    from submission.methods import svd_projection as svd

    def refuse(**kwargs):
        raise AssertionError("no budget: nothing to predict")

    monkeypatch.setattr(svd, "projection_seconds_per_cube", refuse)
    net, retain, forget = _tiny_projection_case()
    METHODS["svd_projection"](net, retain, forget, None)
    assert net.svd_projected_["layers"] == 2


def test_projection_rate_is_a_positive_time_per_cube():
    rate = svd_projection_rate(device=torch.device("cpu"), size=16)
    assert 0 < rate * 16**3 < 5.0  # one 16-D projection takes well under 5 s


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU x2 and a two-layer head on the 8x8 digits (a few seconds to train)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def digits_model():
    """A DigitsCNN trained 8 epochs on 1400 of sklearn's digits; the rest is the test split."""
    load_digits = pytest.importorskip("sklearn.datasets").load_digits
    digits = load_digits()
    x = (torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0 - 0.3) / 0.4
    y = torch.tensor(digits.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    train, test = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    net = DigitsCNN()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    loader = DataLoader(TensorDataset(x[train], y[train]), batch_size=64, shuffle=True, generator=g)
    for _ in range(8):
        for xb, yb in loader:
            optimizer.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            optimizer.step()
    return net.eval(), (x[train], y[train]), (x[test], y[test])


def class_accuracies(net, x, y, forgotten):
    with torch.no_grad():
        right = net(x).argmax(1) == y
    return right[y == forgotten].float().mean().item(), right[y != forgotten].float().mean().item()


@pytest.mark.slow
def test_svd_projection_forgets_a_whole_class_on_digits(digits_model):
    """Class forgetting with the published settings (a = 100 retain, 3 forget), no training.

    On the held-out digits: the forgotten class's accuracy <= 0.1 for class 0 and <= 0.1 on
    average over all ten classes (at most 0.35 for any), and the other classes' accuracy within
    0.1 of the original's (measured: forgotten 0-0.21, mean 0.04; others within 0.01).
    """
    net, (xr, yr), (xt, yt) = digits_model
    forgotten_accs = []
    for c in range(10):
        retain = DataLoader(TensorDataset(xr[yr != c], yr[yr != c]), batch_size=64, shuffle=True)
        forget = DataLoader(TensorDataset(xr[yr == c], yr[yr == c]), batch_size=64)
        unlearned = copy.deepcopy(net)
        seed_everything(0)
        METHODS["svd_projection"](unlearned, retain, forget, None)
        _, before_others = class_accuracies(net, xt, yt, c)
        forgotten, others = class_accuracies(unlearned, xt, yt, c)
        assert others >= before_others - 0.1, (c, others, before_others)
        forgotten_accs.append(forgotten)
    assert forgotten_accs[0] <= 0.1
    assert sum(forgotten_accs) / 10 <= 0.1
    assert max(forgotten_accs) <= 0.35, forgotten_accs


# --- shrink_perturb ----------------------------------------------------------------------


def test_shrink_and_perturb_mixes_each_layer_with_its_own_fresh_initialisation():
    net, by_hand = make_net(0), make_net(0)
    before = copy.deepcopy(net.state_dict())
    torch.manual_seed(7)
    shrink_and_perturb(net, shrink=0.8, perturb=0.5)
    # The same draws, made by hand: each conv/linear layer re-initialised, in module order.
    torch.manual_seed(7)
    expected = {}
    for name, m in by_hand.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
            for p in ("weight", "bias"):
                if getattr(m, p) is not None:
                    key = f"{name}.{p}"
                    expected[key] = 0.8 * before[key] + 0.5 * getattr(m, p).detach()
    after = net.state_dict()
    assert expected, "the test net has conv and linear layers"
    for key, value in after.items():
        if key in expected:
            torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6)
        else:  # BatchNorm parameters and running statistics are kept
            assert torch.equal(value, before[key]), key


def test_shrink_and_perturb_noise_follows_each_layers_initialisation_scale():
    # perturb only (shrink 1): the change of a layer has the spread of its default init,
    # e.g. kaiming-uniform bound 1/sqrt(fan_in) for the classifier
    torch.manual_seed(0)
    layer = nn.Linear(400, 10)
    w = layer.weight.detach().clone()
    net = nn.Sequential(layer)
    shrink_and_perturb(net, shrink=1.0, perturb=1.0)
    delta = layer.weight.detach() - w
    bound = 1 / math.sqrt(400)
    assert delta.abs().max() <= bound + 1e-7
    assert delta.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


def test_shrink_perturb_runs_differ_by_seed_and_repeat_with_the_same_seed():
    images, labels = make_data(64, seed=1)

    def run(seed):
        loader = make_loader(images, labels, form="tuple", batch_size=16)  # same order each run
        net = make_net(0)
        seed_everything(seed)
        METHODS["shrink_perturb"](net, loader, loader, loader, epochs=1)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


def test_shrink_perturb_counts_a_small_retain_sets_epoch_as_several_passes(monkeypatch):
    # 64 examples: an epoch of the defaults' design (1,132 examples) is 18 passes of 4 batches,
    # and the noise is sized for the epochs asked for, not for the passes
    images, labels = make_data(64, seed=1)
    loader = make_loader(images, labels, form="tuple", batch_size=16)
    epochs_seen = []
    monkeypatch.setattr(
        shrink_perturb_module, "auto_perturb", lambda e: epochs_seen.append(e) or auto_perturb(e)
    )
    net = make_net(0)
    steps = []
    net.register_forward_pre_hook(lambda m, args: steps.append(1) if m.training else None)
    METHODS["shrink_perturb"](net, loader, loader, loader, epochs=1)
    assert len(steps) == 18 * len(loader) and epochs_seen == [1.0]
    # a retain set of the design's size keeps its own epochs
    images, labels = make_data(1132, seed=1)
    loader = make_loader(images, labels, form="tuple", batch_size=64)
    net, steps[:] = make_net(0), []
    net.register_forward_pre_hook(lambda m, args: steps.append(1) if m.training else None)
    METHODS["shrink_perturb"](net, loader, loader, loader, epochs=1)
    assert len(steps) == len(loader) == 18


def test_auto_perturb_grows_with_the_epochs_of_relearning():
    assert auto_perturb(1.0) == pytest.approx(0.5)
    assert auto_perturb(2.0) == pytest.approx(0.5 + 0.2 * math.log(2.0))  # 0.639
    assert auto_perturb(0.5) == pytest.approx(0.5 - 0.2 * math.log(2.0))  # 0.361
    assert auto_perturb(0.01) == 0.1 and auto_perturb(0.0) == 0.1  # some noise always
    assert auto_perturb(1e6) == 1.0  # never more than a whole fresh draw


def test_rate_scale_follows_the_square_root_of_the_epochs_up_to_two():
    assert rate_scale(2.0) == 1.0 and rate_scale(5.0) == 1.0  # the whole lr from 2 epochs on
    assert rate_scale(0.5) == pytest.approx(0.5)
    assert rate_scale(1.0) == pytest.approx(math.sqrt(0.5))  # 3e-3 -> 2.1e-3
    assert rate_scale(0.0) == 0.0 and rate_scale(-1.0) == 0.0


def spy_on_perturbation(monkeypatch, net):
    """Record each perturbation's size and how many forward passes ran before it."""
    forwards, calls = [0], []
    net.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    real = shrink_perturb_module.shrink_and_perturb

    def spy(model, *, shrink, perturb):
        calls.append((forwards[0], perturb))
        real(model, shrink=shrink, perturb=perturb)

    monkeypatch.setattr(shrink_perturb_module, "shrink_and_perturb", spy)
    return calls


def test_shrink_perturb_sizes_its_noise_by_the_epochs_that_fit(monkeypatch):
    images, labels = make_data(64, seed=1)
    loader = make_loader(images, labels, form="tuple", batch_size=16)
    epochs_seen = []
    monkeypatch.setattr(
        shrink_perturb_module,
        "auto_perturb",
        lambda e: epochs_seen.append(e) or auto_perturb(e),
    )
    # no budget: every planned epoch runs, the noise is sized for all of them, before step 1
    net = make_net(0)
    calls = spy_on_perturbation(monkeypatch, net)
    METHODS["shrink_perturb"](net, loader, loader, loader, epochs=3)
    assert epochs_seen == [3.0]
    assert calls == [(0, pytest.approx(auto_perturb(3.0)))]
    # a budget that fits a small share of 2000 planned epochs: the three timing steps run on
    # the unperturbed model, then the noise is sized for the epochs that fit
    net = make_net(0)
    epochs_seen.clear()
    calls = spy_on_perturbation(monkeypatch, net)
    METHODS["shrink_perturb"](net, loader, loader, loader, epochs=2000, budget_s=0.5)
    assert len(epochs_seen) == 1 and 0.0 < epochs_seen[0] < 1000
    assert calls == [(3, pytest.approx(auto_perturb(epochs_seen[0])))]
    # a number fixes the size
    net = make_net(0)
    calls = spy_on_perturbation(monkeypatch, net)
    METHODS["shrink_perturb"](net, loader, loader, loader, epochs=1, perturb=0.3)
    assert calls == [(0, 0.3)]


def test_shrink_perturb_sizes_its_rate_by_the_epochs_that_fit(monkeypatch):
    images, labels = make_data(64, seed=1)
    loader = make_loader(images, labels, form="tuple", batch_size=16)
    epochs_seen = []

    def no_rate(epochs):  # a rate of 0 after the perturbation: the weights must stay put
        epochs_seen.append(epochs)
        return 0.0

    monkeypatch.setattr(shrink_perturb_module, "rate_scale", no_rate)

    def run(**kwargs):
        net = make_net(0)
        perturbed = []
        real = shrink_perturb_module.shrink_and_perturb

        def keep(model, **sizes):
            real(model, **sizes)
            perturbed.append([p.detach().clone() for p in model.parameters()])

        monkeypatch.setattr(shrink_perturb_module, "shrink_and_perturb", keep)
        seed_everything(0)
        METHODS["shrink_perturb"](net, loader, loader, loader, **kwargs)
        (after_perturbation,) = perturbed
        pairs = zip(after_perturbation, net.parameters(), strict=True)
        return [torch.equal(a, p) for a, p in pairs]

    # a budget that fits a small share of 2000 planned epochs: scaled by the epochs that fit
    assert all(run(epochs=2000, budget_s=0.5))
    assert len(epochs_seen) == 1 and 0.0 < epochs_seen[0] < 1000
    # no budget: scaled by the planned epochs; scale_lr=False keeps the whole lr
    assert all(run(epochs=3)) and epochs_seen[1:] == [3.0]
    assert not any(run(epochs=3, scale_lr=False)) and len(epochs_seen) == 2


def test_shrink_perturb_warns_when_the_budget_leaves_no_relearning():
    images, labels = make_data(64, seed=1)
    loader = make_loader(images, labels, form="tuple", batch_size=16)
    with pytest.warns(UserWarning, match="ran out within the .* timing steps"):
        METHODS["shrink_perturb"](make_net(0), loader, loader, loader, budget_s=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{"shrink": 1.5}, {"perturb": -0.1}, {"shrink": 1.0, "perturb": 0.0}]
)
def test_shrink_perturb_refuses_bad_settings(kwargs):
    images, labels = make_data(16, seed=1)
    loader = make_loader(images, labels, form="tuple", batch_size=8)
    with pytest.raises(ValueError, match="shrink"):
        METHODS["shrink_perturb"](make_net(0), loader, loader, loader, **kwargs)


# --- ssd ------------------------------------------------------------------------------------


class Repeat:
    """One batch ``times`` over (a retain set whose every batch is alike), ``delay_s`` each."""

    def __init__(self, batch, times: int, delay_s: float = 0.0):
        self.batch, self.times, self.delay_s = batch, times, delay_s

    def __len__(self):
        return self.times

    def __iter__(self):
        for _ in range(self.times):
            time.sleep(self.delay_s)
            yield self.batch


def test_budgeted_ssd_dampens_the_weights_unbudgeted_ssd_does():
    """Both see the whole forget set; the budgeted run sees part of a retain set whose batches
    are alike, so its estimate of the full importance is the full one: same weights dampened
    (weighting by the batches seen instead made the forget set most of "all data")."""
    torch.manual_seed(0)
    original = TinyNet()
    (xf, yf), (xr, yr) = make_data(8, seed=1), make_data(8, seed=2, shift=1.0)
    forget = [(xf[:4], yf[:4]), (xf[4:], yf[4:])]
    full_run, budgeted = copy.deepcopy(original), copy.deepcopy(original)
    METHODS["ssd"](full_run, Repeat((xr, yr), 40), forget, [])
    METHODS["ssd"](budgeted, Repeat((xr, yr), 40, delay_s=0.02), forget, [], budget_s=0.3)
    seen = budgeted.ssd_batches_
    assert seen["forget"] == 2 and 0 < seen["retain"] < 40  # the budget cut the retain pass
    changed = 0
    for p0, p1, p2 in zip(original.parameters(), full_run.parameters(), budgeted.parameters(),
                          strict=True):  # fmt: skip
        assert torch.equal(p1 != p0, p2 != p0)
        torch.testing.assert_close(p2, p1)
        changed += int((p1 != p0).sum())
    assert changed > 0  # it does dampen something here


def test_budgeted_ssd_reads_the_whole_forget_set_past_the_probe_steps():
    """A forget set longer than the loop's probe steps, under a budget that cuts the retain
    pass: every forget batch is still read (a dampening chosen from part of it misses the
    weights only the unseen forget examples rely on)."""
    torch.manual_seed(0)
    net = TinyNet()
    forget = Repeat(make_data(4, seed=1), 12, delay_s=0.01)
    METHODS["ssd"](net, Repeat(make_data(8, seed=2), 200, delay_s=0.01), forget, [],
                   budget_s=0.5)  # fmt: skip
    seen = net.ssd_batches_
    assert seen["forget"] == 12
    assert 0 < seen["retain"] < 200


def test_ssd_without_any_retain_batch_in_budget_says_so_and_does_nothing():
    original = TinyNet()
    net = copy.deepcopy(original)
    forget = Repeat(make_data(4, seed=1), 2, delay_s=0.4)  # the first batch spends the budget
    with pytest.warns(UserWarning, match="ssd: no importance estimate"):
        METHODS["ssd"](net, Repeat(make_data(4, seed=2), 5), forget, [], budget_s=0.2)
    assert net.ssd_batches_["retain"] == 0
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), original.parameters(),
                                                 strict=True))  # fmt: skip


# --- neggrad --------------------------------------------------------------------------------


def test_neggrad_climbs_the_forget_loss_and_never_reads_retain(tiny_setup):
    original, data, _ = tiny_setup
    forget = make_loader(*data["forget"], form="tuple", batch_size=4)
    xf, yf = data["forget"]

    def forget_loss(net):
        with torch.no_grad():
            return F.cross_entropy(net.eval()(xf), yf).item()

    net = copy.deepcopy(original)
    seed_everything(0)
    METHODS["neggrad"](net, Untouchable(), forget, [], epochs=10, lr=5e-2)
    assert forget_loss(net) > forget_loss(original) + 0.1
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        METHODS["neggrad"](net, Untouchable(), forget, [], epochs=0)


# --- scrub ----------------------------------------------------------------------------------


def linear_net(seed: int = 0) -> nn.Module:
    """No BatchNorm: a step on a group of batches equals one on their concatenation."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))


def test_scrub_takes_the_published_settings_and_batch_sizes():
    assert keyword_defaults(METHODS["scrub"]) == {
        "budget_s": None, "epochs": 3, "msteps": 2, "gamma": 0.99, "alpha": 0.001,
        "temperature": 4.0, "lr": 5e-4, "momentum": 0.9, "weight_decay": 5e-4,
        "forget_batch": 512, "retain_batch": 256,
    }  # fmt: skip


def test_scrub_steps_on_groups_of_loader_batches_as_on_the_published_batches():
    (xf, yf), (xr, yr) = make_data(8, seed=1, shift=2.0), make_data(16, seed=2)
    small = copy.deepcopy(linear_net())
    big = copy.deepcopy(small)
    with recorded_steps() as steps:
        METHODS["scrub"](small, make_loader(xr, yr, form="tuple", batch_size=2, shuffle=False),
                         make_loader(xf, yf, form="tuple", batch_size=2, shuffle=False), [],
                         forget_batch=4, retain_batch=8)  # fmt: skip
    # 2 max epochs of 2 groups (4 loader batches in pairs) + 3 min epochs of 2 groups of 4
    assert len(steps) == 2 * 2 + 3 * 2 and {s[1] for s in steps} == {5e-4}  # constant rate
    METHODS["scrub"](big, make_loader(xr, yr, form="tuple", batch_size=8, shuffle=False),
                     make_loader(xf, yf, form="tuple", batch_size=4, shuffle=False), [],
                     forget_batch=None, retain_batch=None)  # fmt: skip
    for a, b in zip(small.parameters(), big.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert not torch.equal(small[1].weight, linear_net()[1].weight)


def test_scrub_runs_its_max_steps_whole_under_a_budget():
    warm_up("cpu")  # torch's one-off start-up is not the method's (the runners do this too)
    (xf, yf), (xr, yr) = make_data(24, seed=1, shift=2.0), make_data(160, seed=2)
    forget = SlowLoader(make_loader(xf, yf, form="tuple", batch_size=4), delay_s=0.02)
    retain = SlowLoader(make_loader(xr, yr, form="tuple", batch_size=4), delay_s=0.02)
    METHODS["scrub"](make_net(), retain, forget, [], budget_s=1.0, forget_batch=None,
                     retain_batch=None)  # fmt: skip
    assert forget.read == 2 * 6  # msteps epochs over all 6 forget batches
    assert 0 < retain.read < 3 * 40  # the min-steps took what was left


# --- random_label and salun -----------------------------------------------------------------


def recorded_batches(net):
    """``(training, batch size)`` of every forward through ``net``, in order."""
    seen = []
    net.register_forward_pre_hook(lambda m, args: seen.append((m.training, len(args[0]))))
    return seen


@pytest.mark.parametrize("name", ["random_label", "salun"])
def test_relabelling_goes_over_forget_then_retain_each_epoch_at_a_constant_rate(name):
    (xf, yf), (xr, yr) = make_data(6, seed=1, shift=2.0), make_data(15, seed=2)
    forget = make_loader(xf, yf, form="tuple", batch_size=3)
    retain = make_loader(xr, yr, form="tuple", batch_size=5)
    net = make_net()
    seen = recorded_batches(net)
    with recorded_steps() as steps:
        METHODS[name](net, retain, forget, [], epochs=2)
    saliency = [(False, 3)] * 2 if name == "salun" else []  # its mask: one eval pass on forget
    assert seen == saliency + ([(True, 3)] * 2 + [(True, 5)] * 3) * 2
    assert len(steps) == 10 and {s[1] for s in steps} == {0.013}


def test_random_labels_are_uniform_over_the_classes_the_true_one_included(monkeypatch):
    import submission.helpers as helpers_module  # random_label steps through its cross-entropy

    targets = []

    class Recording:
        def __getattr__(self, attr):
            return getattr(F, attr)

        @staticmethod
        def cross_entropy(logits, y):
            targets.append(y.clone())
            return F.cross_entropy(logits, y)

    monkeypatch.setattr(helpers_module, "F", Recording())
    xf, yf = make_data(10, seed=1)
    forget = make_loader(xf, yf, form="tuple", batch_size=10, shuffle=False)
    seed_everything(0)
    METHODS["random_label"](make_net(), [], forget, [], epochs=200, lr=0.0)
    drawn = torch.stack(targets)  # (epochs, 10): the forget batch's labels in each epoch
    kept = (drawn == yf).float().mean().item()
    assert 0.07 < kept < 0.13  # one in ten keeps its true label (2,000 draws)
    counts = torch.bincount(drawn.flatten(), minlength=10)
    assert counts.min() > 150 and counts.max() < 250  # about 200 of each class


@pytest.mark.parametrize("name", ["random_label", "salun"])
def test_relabelling_runs_whole_epochs_while_they_fit_a_budget(name):
    """An epoch (3 forget and 20 retain batches of 0.02 s: about 0.46 s) is never cut apart:
    of the 3 planned, the epochs that fit a 1.2 s budget run whole, forget and retain alike."""
    warm_up("cpu")
    (xf, yf), (xr, yr) = make_data(12, seed=1, shift=2.0), make_data(80, seed=2)
    forget = SlowLoader(make_loader(xf, yf, form="tuple", batch_size=4), delay_s=0.02)
    retain = SlowLoader(make_loader(xr, yr, form="tuple", batch_size=4), delay_s=0.02)
    METHODS[name](make_net(), retain, forget, [], budget_s=1.2, epochs=3)
    epochs_run = retain.read // 20
    assert retain.read == 20 * epochs_run and 1 <= epochs_run < 3
    saliency = 3 if name == "salun" else 0  # salun's saliency pass reads the forget set first
    assert forget.read == saliency + 3 * epochs_run


# --- finetune -------------------------------------------------------------------------------


@pytest.mark.parametrize(("epochs", "rates"), [(1, [1e-3]), (3, [1e-3, 7.5e-4, 2.5e-4])])
def test_finetune_steps_its_cosine_once_an_epoch(epochs, rates):
    """The template's CosineAnnealingLR(T_max=epochs) steps after each epoch: one epoch runs
    at 1e-3 throughout."""
    retain = make_loader(*make_data(20, seed=1), form="tuple", batch_size=4)
    with recorded_steps() as steps:
        METHODS["finetune"](make_net(), retain, [], [], epochs=epochs)
    assert [s[1] for s in steps] == pytest.approx([r for r in rates for _ in range(5)])
    assert {s[2:4] for s in steps} == {(0.9, 5e-4)}


# --- bad_teacher ----------------------------------------------------------------------------


def test_bad_teacher_deals_forget_and_a_retain_share_shuffled_into_batches_of_256(monkeypatch):
    """30% of 40 retain batches of 16 (12 batches, 192 examples) and 80 forget examples: 272
    examples, shuffled together into steps of 256 and 16, each example distilled from its own
    teacher (the original for retain, the random network for forget)."""
    import submission.methods.bad_teacher as bad_teacher_module

    (xr, yr), (xf, yf) = make_data(640, seed=1), make_data(80, seed=2, shift=3.0)
    retain = make_loader(xr, yr, form="tuple", batch_size=16)
    forget = make_loader(xf, yf, form="tuple", batch_size=16)
    net = make_net()
    original = copy.deepcopy(net).eval()
    inputs, targets = [], []
    net.register_forward_pre_hook(lambda m, args: inputs.append(args[0]) if m.training else None)
    real_kl = bad_teacher_module.teacher_kl

    def recording_kl(student, target, temperature):
        targets.append(target)
        return real_kl(student, target, temperature)

    monkeypatch.setattr(bad_teacher_module, "teacher_kl", recording_kl)
    seed_everything(0)
    METHODS["bad_teacher"](net, retain, forget, [])
    assert [len(x) for x in inputs] == [256, 16]
    x, target = torch.cat(inputs), torch.cat(targets)
    is_forget = x.flatten(1).mean(1) > 1.5  # the forget images are shifted by 3
    assert int(is_forget.sum()) == 80 and 0 < int(is_forget[:256].sum()) < 80  # mixed in
    with torch.no_grad():
        from_original = original(x)
    torch.testing.assert_close(target[~is_forget], from_original[~is_forget])
    assert not torch.allclose(target[is_forget], from_original[is_forget], atol=1e-3)


def test_bad_teachers_shuffled_union_holds_every_forget_example_once():
    from submission.loop import Deadline, TrainLoop
    from submission.methods.bad_teacher import shuffled_union

    (xr, yr), (xf, yf) = make_data(64, seed=1), make_data(12, seed=2, shift=5.0)
    retain = make_loader(xr, yr, form="tuple", batch_size=8)
    forget = make_loader(xf, yf, form="tuple", batch_size=4)
    torch.manual_seed(0)
    x, is_forget = shuffled_union(retain, forget, "cpu", TrainLoop(Deadline(None), planned_steps=6),
                                  n_retain=3)  # fmt: skip
    assert len(x) == 24 + 12 and int(is_forget.sum()) == 12
    # the forget rows are the forget examples (shifted by 5), in some order, each once
    got = sorted(map(tuple, x[is_forget].flatten(1)[:, :2].tolist()))
    want = sorted(map(tuple, xf.flatten(1)[:, :2].tolist()))
    assert got == want
    assert (x[~is_forget].mean() - 5).abs() > 4  # the retain rows are not shifted
    assert not is_forget[:12].all()  # shuffled: the forget examples are not all first or last
    assert not is_forget[-12:].all()
